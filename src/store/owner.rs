//! Which consumer group a state directory belongs to. The store's records
//! carry no group: a state.dir written by another group (a copied volume, a
//! shared path, a renamed `kafka.group_id`) would be read as this group's
//! state and yield wrong outputs without any error. So the directory names
//! its group in a small file beside the database, written on first use and
//! checked at every start.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The owner file, inside the state directory.
pub const OWNER_FILE: &str = "tierstream-owner.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Owner {
    group_id: String,
}

/// Claims `dir` for `group_id`: refuses a directory that names another
/// group, names this one in a directory that names none (new, or written
/// before the file existed).
pub fn claim(dir: &Path, group_id: &str) -> Result<()> {
    let path = dir.join(OWNER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let owner: Owner = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a tierstream owner file: start with --reset-state to rebuild \
                     the state directory",
                    path.display()
                )
            })?;
            if owner.group_id != group_id {
                bail!(
                    "state.dir {} holds the state of consumer group '{}', not of '{group_id}' \
                     (kafka.group_id): give this instance its own state.dir, or start with \
                     --reset-state to discard it and rebuild this group's state from its \
                     changelog",
                    dir.display(),
                    owner.group_id
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let owner = Owner {
                group_id: group_id.to_owned(),
            };
            std::fs::write(&path, serde_json::to_vec(&owner)?)
                .with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_claimed_once_and_refused_to_another_group() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), "g1").unwrap();
        claim(dir.path(), "g1").unwrap();
        let e = claim(dir.path(), "g2").unwrap_err().to_string();
        assert!(
            e.contains("'g1'") && e.contains("'g2'") && e.contains("--reset-state"),
            "{e}"
        );
    }

    #[test]
    fn a_garbled_owner_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OWNER_FILE), b"\x00\x01").unwrap();
        let e = format!("{:#}", claim(dir.path(), "g").unwrap_err());
        assert!(e.contains("not a tierstream owner file"), "{e}");
    }
}
