//! Whose rights a publish job reads with.
//!
//! The publisher reads model directories with its own rights, which include its token. Without a
//! check, anyone who may call `Publish` could have it stage (and upload, and make public) a
//! directory they cannot read themselves: a confused deputy. So each request carries its caller's
//! credentials, taken from the bus daemon (not from the caller's word), and every directory and
//! file staged must be one that caller could read: owner, group or other bits against the caller's
//! uid and groups, as the kernel checks them without ACLs (root may read anything). POSIX ACLs
//! are not consulted: a grant only an ACL gives is refused; see docs/publisher.md.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Read permission bit (of an owner/group/other triplet).
pub const READ: u32 = 4;
/// Search (execute) permission bit.
pub const SEARCH: u32 = 1;

/// The D-Bus caller of a request: its uid and the groups the bus daemon reported for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    #[serde(default)]
    pub gids: Vec<u32>,
}

impl Caller {
    /// Whether this caller has every bit of `need` (`READ`, `SEARCH`) on a file with `meta`,
    /// by the owner/group/other rule. Root has them all (`CAP_DAC_READ_SEARCH`).
    pub fn may(&self, meta: &Metadata, need: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        } & 7;
        bits & need == need
    }

    /// Refuses with a message naming the path, the caller and what it lacks.
    pub fn require(&self, meta: &Metadata, need: u32, what: &std::path::Path) -> Result<()> {
        if self.may(meta, need) {
            return Ok(());
        }
        let lacks = match need {
            READ => "read",
            SEARCH => "search (x)",
            _ => "read and search",
        };
        Err(Error::Invalid(format!(
            "{}: the caller (uid {}) may not {lacks} it; the publisher reads only what its caller could (owner {}, group {}, mode {:o})",
            what.display(),
            self.uid,
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        )))
    }

    /// The credentials of the sender of the message being handled, asked of the bus daemon
    /// (`GetConnectionCredentials`; `GetConnectionUnixUser` where it lacks the former).
    pub async fn of_sender(
        conn: &zbus::Connection,
        header: &zbus::message::Header<'_>,
    ) -> Result<Caller> {
        let sender = header
            .sender()
            .ok_or_else(|| Error::Invalid("the request has no sender".into()))?
            .to_owned();
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        match dbus.get_connection_credentials(sender.clone().into()).await {
            Ok(creds) => {
                if let Some(uid) = creds.unix_user_id() {
                    return Ok(Caller {
                        uid,
                        gids: creds.unix_group_ids().cloned().unwrap_or_default(),
                    });
                }
            }
            Err(e) => tracing::debug!("GetConnectionCredentials failed ({e}); asking for the uid"),
        }
        let uid = dbus
            .get_connection_unix_user(sender.into())
            .await
            .map_err(|e| Error::Invalid(format!("cannot tell who the caller is: {e}")))?;
        Ok(Caller {
            uid,
            gids: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Proves: the owner/group/other rule picks the right triplet, root reads anything, and a
    /// stranger is refused a file only its owner may read (the check a `Publish` of someone
    /// else's 0600 file or 0700 directory fails).
    #[test]
    fn owner_group_other_as_the_kernel_checks_them() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let meta = |mode: u32| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::metadata(&f).unwrap()
        };
        let m = meta(0o600);
        let (owner, group) = (m.uid(), m.gid());
        let me = Caller {
            uid: owner,
            gids: vec![],
        };
        let stranger = Caller {
            uid: owner.wrapping_add(4242),
            gids: vec![group.wrapping_add(4242)],
        };
        let member = Caller {
            uid: owner.wrapping_add(4242),
            gids: vec![group],
        };
        let root = Caller {
            uid: 0,
            gids: vec![],
        };
        if owner != 0 {
            assert!(me.may(&m, READ));
        }
        assert!(!stranger.may(&m, READ));
        assert!(root.may(&m, READ | SEARCH));
        let e = stranger.require(&m, READ, &f).unwrap_err().to_string();
        assert!(e.contains("may not read"), "{e}");
        let m = meta(0o640);
        assert!(member.may(&m, READ) && !stranger.may(&m, READ));
        let m = meta(0o604);
        assert!(stranger.may(&m, READ));
        // The owner's own bits rule even when "other" would allow it.
        let owner_only = Caller {
            uid: owner,
            gids: vec![group],
        };
        if owner != 0 {
            assert!(!owner_only.may(&meta(0o044), READ));
        }
        let m = meta(0o701);
        assert!(stranger.may(&m, SEARCH) && !stranger.may(&m, READ | SEARCH));
    }
}
