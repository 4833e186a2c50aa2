//! Where the repository is and how to read it: from flags, environment variables or a config file,
//! in that order. The config file (`--config`, `BACKSTOP_CONFIG`, or /etc/backstop/backstop.conf
//! when it exists) holds `key = value` lines with the flag names (`repository`, `cluster`,
//! `s3_endpoint`, `s3_region`, `s3_force_path_style`, `s3_ca_file`, `identity_file`, `encryption_recipients`, ...).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;

use backstop_core::auth::{PublicKey, SigningKey, Trust};
use backstop_core::codec::{self, CodecSettings, Compression};
use backstop_core::settings;
use backstop_core::store::{self, S3Options};
use backstop_core::{Error, Location, ObjectStore, Repository};

const DEFAULT_CONFIG: &str = "/etc/backstop/backstop.conf";

#[derive(Args, Debug, Clone, Default)]
pub struct RepositoryArgs {
    /// Repository URL: file:///path or s3://bucket/prefix.
    #[arg(long, env = "BACKSTOP_REPOSITORY")]
    pub repository: Option<String>,
    /// The cluster's namespace in the repository (the server's backstop.cluster_name, by default its
    /// system identifier). Found by itself when the repository holds exactly one cluster.
    #[arg(long, env = "BACKSTOP_CLUSTER")]
    pub cluster: Option<String>,
    /// S3 endpoint URL, for S3-compatible stores.
    #[arg(long, env = "BACKSTOP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "BACKSTOP_S3_REGION")]
    pub s3_region: Option<String>,
    /// Address buckets by path (endpoint/bucket), as most self-hosted stores need.
    #[arg(long, env = "BACKSTOP_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: Option<bool>,
    /// PEM file of certificate authorities to trust for the S3 endpoint, besides the system's.
    #[arg(long, env = "BACKSTOP_S3_CA_FILE")]
    pub s3_ca_file: Option<PathBuf>,
    /// File with age identities (AGE-SECRET-KEY-1...) to decrypt encrypted objects.
    #[arg(long, env = "BACKSTOP_IDENTITY_FILE")]
    pub identity_file: Option<PathBuf>,
    /// Public key whose signatures to accept (ed25519:<hex>, from `SELECT backstop.repository_key()`
    /// on the server; keep it with your recovery kit). Repeat it, or separate keys by commas, to
    /// trust more than one (a key rotation, a restored cluster). Nothing unsigned is read without
    /// one.
    #[arg(long = "trusted-key", env = "BACKSTOP_TRUSTED_KEYS", value_delimiter = ',')]
    pub trusted_keys: Vec<String>,
    /// A data directory whose signing key (backstop_signing.key) is trusted too, when this user can
    /// read it: the cluster's own key, for commands run beside the server. Defaults to $PGDATA.
    #[arg(long, env = "BACKSTOP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Read objects no trusted key signed (a repository written by backstop 0.2 and not adopted).
    /// Every such object is named in a warning; a restore made this way records that it was.
    #[arg(long, env = "BACKSTOP_TRUST_UNAUTHENTICATED")]
    pub trust_unauthenticated: bool,
    /// Config file with defaults for these options.
    #[arg(long, env = "BACKSTOP_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Options of commands that write (wal push).
#[derive(Args, Debug, Clone, Default)]
pub struct WriteArgs {
    /// age public keys to encrypt to (comma separated), as the server's backstop.encryption_recipients.
    #[arg(long, env = "BACKSTOP_ENCRYPTION_RECIPIENTS")]
    pub encryption_recipients: Option<String>,
    /// zstd level (1-19); 0 stores uncompressed.
    #[arg(long, env = "BACKSTOP_COMPRESSION_LEVEL")]
    pub compression_level: Option<i32>,
}

pub struct ConfigFile {
    values: HashMap<String, String>,
    path: Option<PathBuf>,
}

impl ConfigFile {
    pub fn load(explicit: Option<&Path>) -> Result<Self, Error> {
        let path = match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let Some(path) = path else { return Ok(ConfigFile { values: HashMap::new(), path: None }) };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read config file", &path, e))?;
        Ok(ConfigFile { values: parse_config(&text, &path)?, path: Some(path) })
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, Error> {
        self.get(key)
            .map(|value| match value.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => Ok(true),
                "false" | "off" | "no" | "0" => Ok(false),
                _ => Err(Error::InvalidSetting {
                    setting: "config file",
                    reason: format!("{key} = {value} in {} is not a boolean", self.describe()),
                }),
            })
            .transpose()
    }

    fn describe(&self) -> String {
        self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }
}

fn parse_config(text: &str, path: &Path) -> Result<HashMap<String, String>, Error> {
    let mut values = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::InvalidSetting {
                setting: "config file",
                reason: format!("{}:{}: expected key = value", path.display(), number + 1),
            });
        };
        let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
        values.insert(key.trim().replace('-', "_"), value.to_string());
    }
    Ok(values)
}

impl RepositoryArgs {
    /// Flags and environment win; the config file fills in what they left unset.
    pub fn resolve(&self) -> Result<(Self, ConfigFile), Error> {
        let config = ConfigFile::load(self.config.as_deref())?;
        let data_dir = self.data_dir.clone().or_else(|| std::env::var_os("PGDATA").map(PathBuf::from));
        let resolved = RepositoryArgs {
            repository: self.repository.clone().or_else(|| config.get("repository")),
            cluster: self.cluster.clone().or_else(|| config.get("cluster")),
            s3_endpoint: self.s3_endpoint.clone().or_else(|| config.get("s3_endpoint")),
            s3_region: self.s3_region.clone().or_else(|| config.get("s3_region")),
            s3_force_path_style: match self.s3_force_path_style {
                Some(value) => Some(value),
                None => config.bool("s3_force_path_style")?,
            },
            s3_ca_file: self.s3_ca_file.clone().or_else(|| config.get("s3_ca_file").map(PathBuf::from)),
            identity_file: self.identity_file.clone().or_else(|| config.get("identity_file").map(PathBuf::from)),
            trusted_keys: {
                let mut keys: Vec<String> = if self.trusted_keys.is_empty() {
                    config
                        .get("trusted_keys")
                        .map(|keys| keys.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect())
                        .unwrap_or_default()
                } else {
                    self.trusted_keys.clone()
                };
                // The data directory's own key, passed on as a public key like the others (a
                // restore writes them all into restore_command).
                if let Some(key) = data_dir.as_deref().and_then(own_key) {
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                keys
            },
            data_dir,
            trust_unauthenticated: self.trust_unauthenticated || config.bool("trust_unauthenticated")?.unwrap_or(false),
            config: self.config.clone(),
        };
        resolved.check()?;
        Ok((resolved, config))
    }

    /// The values the server also takes, refused as its settings refuse them
    /// (backstop_core::settings), in the same words. (The repository URL is parsed, by the same
    /// function as the server's check, where it is opened.)
    fn check(&self) -> Result<(), Error> {
        let checks = [
            (&settings::CLUSTER_NAME, "cluster", &self.cluster),
            (&settings::S3_ENDPOINT, "s3_endpoint", &self.s3_endpoint),
        ];
        for (setting, flag, value) in checks {
            if let Some(value) = value {
                setting.check_as(flag, value)?;
            }
        }
        for keys in &self.trusted_keys {
            settings::TRUSTED_KEYS.check_as("trusted-key", keys)?;
        }
        Ok(())
    }

    /// Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    /// ~/.aws), never from flags, so they do not show up in `ps` or shell history.
    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: self.s3_force_path_style.unwrap_or(false),
            ca_file: self.s3_ca_file.clone(),
            ..S3Options::default()
        }
    }

    pub async fn open_store(&self) -> Result<std::sync::Arc<dyn ObjectStore>, Error> {
        let repository = self.repository.as_deref().ok_or(Error::NotConfigured(
            "the repository (--repository, BACKSTOP_REPOSITORY or repository = in the config file)",
        ))?;
        let location: Location = repository.parse()?;
        store::open(&location, &self.s3_options()).await
    }

    /// The keys reads accept, from --trusted-key; refused when there is none and
    /// --trust-unauthenticated was not given, since then nothing could be read.
    pub fn trust(&self) -> Result<Trust, Error> {
        let mut keys = Vec::new();
        for text in &self.trusted_keys {
            keys.extend(PublicKey::parse_list(text)?);
        }
        let trust = Trust::new(keys);
        if self.trust_unauthenticated {
            eprintln!(
                "backstop: --trust-unauthenticated: objects no trusted key signed are read too; each one is named below"
            );
            return Ok(trust.accept_unauthenticated());
        }
        Ok(trust)
    }

    /// Opens the repository for reading, trusting the keys of [`RepositoryArgs::trust`]; `cluster`
    /// overrides discovery when the caller knows better.
    pub async fn open(&self, codec: CodecSettings) -> Result<Repository, Error> {
        let trust = self.trust()?;
        if trust.is_empty() && !trust.accepts_unauthenticated() {
            return Err(Error::InvalidSetting {
                setting: "trusted-key",
                reason:
                    "no key to trust: pass --trusted-key ed25519:... (or BACKSTOP_TRUSTED_KEYS, or trusted_keys = in \
                         the config file). The server's SELECT backstop.repository_key() prints it; it belongs in the \
                         recovery kit. Nothing is read from the repository that no trusted key signed."
                        .into(),
            });
        }
        Ok(self.open_untrusted(codec).await?.with_trust(trust))
    }

    /// Opens the repository to write with `signer` (its own key is trusted, and --trusted-key too).
    pub async fn open_signing(&self, codec: CodecSettings, signer: SigningKey) -> Result<Repository, Error> {
        let trust = self.trust()?;
        Ok(self.open_untrusted(codec).await?.with_signer(signer).with_trust(trust))
    }

    async fn open_untrusted(&self, codec: CodecSettings) -> Result<Repository, Error> {
        let store = self.open_store().await?;
        let cluster = match &self.cluster {
            Some(cluster) => cluster.clone(),
            None => discover_cluster(store.as_ref()).await?,
        };
        let identities = match &self.identity_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io("read identity file", path, e))?;
                codec::parse_identities(&text)?
            }
            None => Vec::new(),
        };
        Ok(Repository::new(store, &cluster, codec)?.with_identities(identities))
    }
}

/// The public key of the signing key in `data_dir`, if there is one this user can read.
fn own_key(data_dir: &Path) -> Option<String> {
    match backstop_core::auth::load_signing_key(data_dir) {
        Ok(key) => key.map(|k| k.public().to_string()),
        Err(e) => {
            eprintln!("backstop: the signing key of {} is not used: {e}", data_dir.display());
            None
        }
    }
}

impl WriteArgs {
    pub fn codec(&self, config: &ConfigFile) -> Result<CodecSettings, Error> {
        let level = match self.compression_level {
            Some(level) => level,
            None => config
                .get("compression_level")
                .map(|v| {
                    v.parse().map_err(|_| Error::InvalidSetting {
                        setting: "compression_level",
                        reason: format!("\"{v}\" is not a number"),
                    })
                })
                .transpose()?
                .unwrap_or(Compression::DEFAULT_ZSTD_LEVEL),
        };
        // The server's bounds for backstop.compression_level (0 is the CLI's "uncompressed").
        let compression = if level == 0 {
            Compression::None
        } else {
            settings::COMPRESSION_LEVEL.check_as("compression_level", i64::from(level))?;
            Compression::zstd(level)?
        };
        let recipients = match self.encryption_recipients.clone().or_else(|| config.get("encryption_recipients")) {
            Some(text) => codec::parse_recipients(&text)?,
            None => Vec::new(),
        };
        Ok(CodecSettings::new(compression, recipients))
    }
}

/// The only namespace holding a cluster.json, if there is exactly one.
pub async fn discover_cluster(store: &dyn ObjectStore) -> Result<String, Error> {
    let mut clusters = Vec::new();
    for namespace in store.list_prefixes("").await? {
        if store.head(&format!("{namespace}/{}", backstop_core::repository::CLUSTER_FILE)).await?.is_some() {
            clusters.push(namespace);
        }
    }
    match clusters.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(Error::InvalidSetting {
            setting: "cluster",
            reason: format!("{} holds no cluster yet; pass --cluster to name one", store.describe()),
        }),
        many => Err(Error::InvalidSetting {
            setting: "cluster",
            reason: format!("{} holds several clusters ({}); pass --cluster", store.describe(), many.join(", ")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_lines_are_parsed_with_comments_and_quotes() {
        let values = parse_config(
            "# backstop\nrepository = 's3://bucket/prod'\n s3-endpoint=http://127.0.0.1:3900 \n\ncluster = \"db1\"\n",
            Path::new("test.conf"),
        )
        .unwrap();
        assert_eq!(values["repository"], "s3://bucket/prod");
        assert_eq!(values["s3_endpoint"], "http://127.0.0.1:3900");
        assert_eq!(values["cluster"], "db1");
        assert!(parse_config("just words", Path::new("x.conf")).unwrap_err().to_string().contains("x.conf:1"));
    }

    #[test]
    fn flags_and_config_values_are_checked_as_the_server_checks_its_settings() {
        let args = |endpoint: &str, cluster: &str, level: i32| {
            (
                RepositoryArgs {
                    repository: Some("file:///tmp/r".into()),
                    s3_endpoint: Some(endpoint.into()),
                    cluster: Some(cluster.into()),
                    ..RepositoryArgs::default()
                },
                WriteArgs { compression_level: Some(level), ..WriteArgs::default() },
            )
        };
        let (repository, _) = args("s3.example.com", "prod", 3);
        let error = repository.resolve().err().expect("an endpoint without a scheme").to_string();
        assert!(error.contains("s3_endpoint") && error.contains("http:// or https://"), "{error}");
        let (repository, _) = args("https://s3.example.com", ".prod", 3);
        let error = repository.resolve().err().expect("a cluster name starting with a dot").to_string();
        assert!(error.contains("cluster") && error.contains("not starting with '.'"), "{error}");
        let (repository, write) = args("https://s3.example.com", "prod", 20);
        let (_, config) = repository.resolve().expect("valid flags");
        let error = write.codec(&config).expect_err("level 20 is beyond the server's bounds").to_string();
        assert!(error.contains("compression_level") && error.contains("1 to 19"), "{error}");
        assert!(args("https://s3.example.com", "prod", 0).1.codec(&config).is_ok(), "0: uncompressed");
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backstop.conf");
        std::fs::write(
            &path,
            "repository = file:///from/config\ncluster = from-config\ns3_force_path_style = on\ns3_ca_file = /etc/ssl/minio-ca.pem\n",
        )
        .unwrap();
        let args = RepositoryArgs {
            repository: Some("file:///from/flag".into()),
            config: Some(path),
            ..RepositoryArgs::default()
        };
        let (resolved, _) = args.resolve().unwrap();
        assert_eq!(resolved.repository.as_deref(), Some("file:///from/flag"));
        assert_eq!(resolved.cluster.as_deref(), Some("from-config"));
        assert_eq!(resolved.s3_force_path_style, Some(true));
        let options = resolved.s3_options();
        assert_eq!(options.ca_file.as_deref(), Some(Path::new("/etc/ssl/minio-ca.pem")));
    }
}
