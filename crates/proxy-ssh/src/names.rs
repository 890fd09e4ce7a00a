//! Pure helpers over what the client sends: the user field and environment requests.

/// What the SSH user field names: `<connection>` or `<target-user>+<connection>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login<'a> {
    pub connection: &'a str,
    pub target_user: Option<&'a str>,
}

/// Split the user field. The last `+` separates the target user from the connection, so
/// connection names cannot contain `+` (config validation refuses them).
pub fn parse_login(user: &str) -> Login<'_> {
    match user.rsplit_once('+') {
        Some((u, c)) if !u.is_empty() => Login {
            connection: c,
            target_user: Some(u),
        },
        _ => Login {
            connection: user.trim_start_matches('+'),
            target_user: None,
        },
    }
}

/// Pick the target user: the connection's `user` unless the client asked for one of
/// `users`. `None` when the asked-for user is not allowed.
pub fn target_user<'a>(
    asked: Option<&'a str>,
    default: &'a str,
    allowed: &'a [String],
) -> Option<&'a str> {
    match asked {
        None => Some(default),
        Some(u) if u == default || allowed.iter().any(|a| a == u) => Some(u),
        Some(_) => None,
    }
}

/// Environment variables always passed to the target: locale settings and TERM.
pub fn env_allowed(name: &str, extra: &[String]) -> bool {
    name == "LANG"
        || name == "TERM"
        || name == "TZ"
        || (name.starts_with("LC_")
            && name.len() > 3
            && name[3..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_'))
        || extra.iter().any(|e| e == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_forms() {
        assert_eq!(
            parse_login("web"),
            Login {
                connection: "web",
                target_user: None
            }
        );
        assert_eq!(
            parse_login("deploy+web"),
            Login {
                connection: "web",
                target_user: Some("deploy")
            }
        );
        assert_eq!(
            parse_login("+web"),
            Login {
                connection: "web",
                target_user: None
            }
        );
        assert_eq!(parse_login("a+b+web").target_user, Some("a+b"));
    }

    #[test]
    fn target_users_are_restricted() {
        let allowed = vec!["deploy".to_string()];
        assert_eq!(target_user(None, "app", &allowed), Some("app"));
        assert_eq!(target_user(Some("app"), "app", &allowed), Some("app"));
        assert_eq!(target_user(Some("deploy"), "app", &allowed), Some("deploy"));
        assert_eq!(target_user(Some("root"), "app", &allowed), None);
    }

    #[test]
    fn env_allow_list() {
        assert!(env_allowed("LANG", &[]));
        assert!(env_allowed("LC_ALL", &[]));
        assert!(env_allowed("LC_CTYPE", &[]));
        assert!(!env_allowed("LC_", &[]));
        assert!(!env_allowed("LD_PRELOAD", &[]));
        assert!(!env_allowed("PATH", &[]));
        assert!(env_allowed("GIT_PROTOCOL", &["GIT_PROTOCOL".to_string()]));
    }
}
