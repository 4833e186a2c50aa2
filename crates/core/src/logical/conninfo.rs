//! Connection strings for the client programs, as `pg_restore -d` accepts them: `key=value ...`
//! or a `postgresql://` URI (libpq's two forms), turned into libpq environment variables.
//!
//! Invariants:
//! - A connection string never reaches a command line: its settings travel as libpq environment
//!   variables (`PGHOST`, `PGPASSWORD`, ...), so a password in it is not shown by `ps`, and the
//!   database name is still set through `PGDATABASE` alone (see [`super::restore`]).
//! - A keyword libpq has no environment variable for is refused with the ones accepted, never
//!   dropped: a connection that silently lost `sslmode=verify-full` would be weaker than asked.
//! - What is printed of a connection is [`Conninfo::describe`], which never holds the password.

use crate::error::{Error, Result};

/// libpq's keywords and the environment variable each one has.
const KEYWORDS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("service", "PGSERVICE"),
    ("options", "PGOPTIONS"),
    ("application_name", "PGAPPNAME"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("sslmode", "PGSSLMODE"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("sslsni", "PGSSLSNI"),
    ("requirepeer", "PGREQUIREPEER"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("gssencmode", "PGGSSENCMODE"),
    ("krbsrvname", "PGKRBSRVNAME"),
    ("gsslib", "PGGSSLIB"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
];

/// A parsed connection string: libpq settings by environment variable, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conninfo {
    pub settings: Vec<(&'static str, String)>,
}

/// libpq's rule (`recognized_connection_string`): a URI prefix, or an `=` anywhere.
pub fn is_conninfo(text: &str) -> bool {
    text.starts_with("postgresql://") || text.starts_with("postgres://") || text.contains('=')
}

impl Conninfo {
    pub fn parse(text: &str) -> Result<Conninfo> {
        let pairs = if let Some(rest) = text.strip_prefix("postgresql://").or_else(|| text.strip_prefix("postgres://"))
        {
            parse_uri(rest)?
        } else {
            parse_keywords(text)?
        };
        let mut settings: Vec<(&'static str, String)> = Vec::new();
        for (key, value) in pairs {
            let Some((_, env)) = KEYWORDS.iter().find(|(k, _)| *k == key) else {
                return Err(invalid(format!(
                    "\"{}\" is not a connection keyword backstop can pass on (accepted: {})",
                    key.escape_debug(),
                    KEYWORDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                )));
            };
            // As in libpq, a later setting of the same keyword wins.
            settings.retain(|(e, _)| e != env);
            settings.push((env, value));
        }
        Ok(Conninfo { settings })
    }

    pub fn get(&self, env: &str) -> Option<&str> {
        self.settings.iter().find(|(e, _)| *e == env).map(|(_, v)| v.as_str())
    }

    /// The database it names.
    pub fn database(&self) -> Option<&str> {
        self.get("PGDATABASE").filter(|d| !d.is_empty())
    }

    /// The settings without the database (each program gets its own PGDATABASE).
    pub fn environment(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.settings.iter().filter(|(e, _)| *e != "PGDATABASE").map(|(e, v)| (*e, v.as_str()))
    }

    /// For messages: every setting but the password.
    pub fn describe(&self) -> String {
        self.settings
            .iter()
            .map(|(env, value)| {
                let key = KEYWORDS.iter().find(|(_, e)| e == env).map(|(k, _)| *k).unwrap_or(env);
                if *env == "PGPASSWORD" {
                    format!("{key}=<hidden>")
                } else {
                    format!("{key}={value}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidInput(format!("invalid connection string: {reason}"))
}

/// `key = value` pairs separated by whitespace; a value may be single-quoted, and `\` escapes
/// the next character (libpq's `conninfo_parse`).
fn parse_keywords(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(invalid(format!("missing \"=\" after \"{}\"", key.escape_debug())));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(invalid("unterminated quoted string".into())),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, percent-decoded.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let mut pairs = Vec::new();
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if !user.is_empty() {
                pairs.push(("user".to_string(), decode(user)?));
            }
            if !password.is_empty() {
                pairs.push(("password".to_string(), decode(password)?));
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        for host in hosts.split(',') {
            let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
                let (name, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| invalid(format!("unterminated IPv6 address in \"{host}\"")))?;
                (name, after.strip_prefix(':').unwrap_or(""))
            } else {
                host.split_once(':').unwrap_or((host, ""))
            };
            names.push(decode(name)?);
            ports.push(decode(port)?);
        }
        pairs.push(("host".to_string(), names.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_string(), ports.join(",")));
        }
    }
    if !path.is_empty() {
        pairs.push(("dbname".to_string(), decode(path)?));
    }
    for parameter in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) =
            parameter.split_once('=').ok_or_else(|| invalid(format!("missing \"=\" in \"{parameter}\"")))?;
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok(pairs)
}

fn decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| invalid(format!("invalid percent-encoding in \"{text}\"")))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("\"{text}\" does not decode to UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_strings_parse_as_libpq_does() {
        let c = Conninfo::parse("host=db1.example.com port=5433 dbname = app user='a b' password='it\\'s'").unwrap();
        assert_eq!(c.database(), Some("app"));
        assert_eq!(c.get("PGHOST"), Some("db1.example.com"));
        assert_eq!(c.get("PGPORT"), Some("5433"));
        assert_eq!(c.get("PGUSER"), Some("a b"));
        assert_eq!(c.get("PGPASSWORD"), Some("it's"));
        assert!(!c.environment().any(|(e, _)| e == "PGDATABASE"), "each program gets its own database");
        assert_eq!(c.describe(), "host=db1.example.com port=5433 dbname=app user=a b password=<hidden>");
        assert_eq!(Conninfo::parse("dbname=a dbname=b").unwrap().database(), Some("b"), "the last one wins");
        assert!(Conninfo::parse("host=x dbname").is_err());
        assert!(Conninfo::parse("password='open").is_err());
        let unknown = Conninfo::parse("dbname=app sslmode=verify-full frobnicate=1").unwrap_err().to_string();
        assert!(unknown.contains("frobnicate") && unknown.contains("sslmode"), "{unknown}");
    }

    #[test]
    fn uris_parse_with_users_hosts_ports_and_parameters() {
        let c = Conninfo::parse(
            "postgresql://alice:s%40cret@db1:5433,[::1]:5434/my%20app?sslmode=require&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(c.get("PGUSER"), Some("alice"));
        assert_eq!(c.get("PGPASSWORD"), Some("s@cret"));
        assert_eq!(c.get("PGHOST"), Some("db1,::1"));
        assert_eq!(c.get("PGPORT"), Some("5433,5434"));
        assert_eq!(c.database(), Some("my app"));
        assert_eq!(c.get("PGSSLMODE"), Some("require"));
        assert_eq!(c.get("PGCONNECT_TIMEOUT"), Some("5"));
        assert_eq!(Conninfo::parse("postgres://localhost").unwrap().database(), None);
        assert!(Conninfo::parse("postgresql://h/db?nokey").is_err());
        assert!(Conninfo::parse("postgresql://h/%zz").is_err());
    }

    #[test]
    fn what_is_a_connection_string() {
        assert!(is_conninfo("host=x dbname=app"));
        assert!(is_conninfo("postgresql://x/app"));
        assert!(is_conninfo("postgres://x/app"));
        assert!(!is_conninfo("app_restored"));
    }
}
