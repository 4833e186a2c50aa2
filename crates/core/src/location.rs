//! Repository locations: `file:///absolute/path` (the embedded default) or `s3://bucket/prefix`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File { root: PathBuf },
    S3 { bucket: String, prefix: String },
}

const ACCEPTED: &str = "use file:///absolute/path or s3://bucket[/prefix]";

impl FromStr for Location {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidLocation { location: text.to_string(), reason };
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() {
            return Err(invalid(format!("it is empty; {ACCEPTED}")));
        }
        let Some((scheme, rest)) = text_trimmed.split_once("://") else {
            return Err(invalid(format!("it has no scheme; {ACCEPTED}")));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid(format!(
                        "a file repository needs an absolute path (three slashes: file:///var/lib/backstop); {ACCEPTED}"
                    )));
                }
                let root = PathBuf::from(rest.trim_end_matches('/'));
                if root.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                    return Err(invalid("the path must not contain '..'".into()));
                }
                if root.as_os_str().is_empty() {
                    return Err(invalid("the root directory / cannot be a repository".into()));
                }
                Ok(Location::File { root })
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                validate_bucket(bucket).map_err(invalid)?;
                let prefix = prefix.trim_matches('/');
                if prefix.split('/').any(|part| part == "..") {
                    return Err(invalid("the prefix must not contain '..'".into()));
                }
                Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
            }
            other => Err(invalid(format!("unknown scheme \"{other}\"; {ACCEPTED}"))),
        }
    }
}

fn validate_bucket(bucket: &str) -> Result<(), String> {
    let valid_chars = bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let valid_ends = bucket
        .chars()
        .next()
        .zip(bucket.chars().last())
        .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && valid_chars && valid_ends {
        Ok(())
    } else {
        Err(format!(
            "\"{bucket}\" is not a valid bucket name (3 to 63 lowercase letters, digits, '-' or '.'); {ACCEPTED}"
        ))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { root } => write!(f, "file://{}", root.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_file_and_s3_locations() {
        assert_eq!(
            "file:///var/lib/backstop/".parse::<Location>().unwrap(),
            Location::File { root: "/var/lib/backstop".into() }
        );
        assert_eq!(
            "s3://my-bucket/prod/db1/".parse::<Location>().unwrap(),
            Location::S3 { bucket: "my-bucket".into(), prefix: "prod/db1".into() }
        );
        assert_eq!(
            "s3://my-bucket".parse::<Location>().unwrap(),
            Location::S3 { bucket: "my-bucket".into(), prefix: "".into() }
        );
    }

    #[test]
    fn rejects_bad_locations_with_the_accepted_form() {
        for bad in ["", "ftp://x/y", "/var/lib/backstop", "file://relative/path", "s3://A_B", "s3://b/../x", "file:///"]
        {
            let message = bad.parse::<Location>().unwrap_err().to_string();
            assert!(message.contains("invalid repository location"), "{bad}: {message}");
        }
        let message = "gs://bucket".parse::<Location>().unwrap_err().to_string();
        assert!(message.contains("unknown scheme \"gs\""), "{message}");
        assert!(message.contains("file:///absolute/path"), "{message}");
    }

    #[test]
    fn displays_round_trip() {
        for text in ["file:///srv/repo", "s3://bucket-1/a/b", "s3://bucket-1"] {
            assert_eq!(text.parse::<Location>().unwrap().to_string(), text);
        }
    }
}
