//! Where the repository is, from flags or the environment (flags win).

use clap::Args;

use backstop_core::store::{self, S3Options};
use backstop_core::{codec, Error, Location, Repository};

#[derive(Args, Debug, Clone)]
pub struct RepositoryArgs {
    /// Repository URL: file:///path or s3://bucket/prefix.
    #[arg(long, env = "BACKSTOP_REPOSITORY")]
    pub repository: String,
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
    pub s3_force_path_style: bool,
    /// File with age identities (AGE-SECRET-KEY-1...) to decrypt encrypted repositories.
    #[arg(long, env = "BACKSTOP_IDENTITY_FILE")]
    pub identity_file: Option<std::path::PathBuf>,
}

impl RepositoryArgs {
    /// Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    /// ~/.aws), never from flags, so they do not show up in `ps` or shell history.
    pub fn s3_options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: self.s3_force_path_style,
            ..S3Options::default()
        }
    }

    pub async fn open(&self) -> Result<Repository, Error> {
        let location: Location = self.repository.parse()?;
        let store = store::open(&location, &self.s3_options()).await?;
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
        Ok(Repository::new(store, &cluster, codec::CodecSettings::plain())?.with_identities(identities))
    }
}

/// The only namespace holding a cluster.json, if there is exactly one.
async fn discover_cluster(store: &dyn backstop_core::ObjectStore) -> Result<String, Error> {
    let clusters: Vec<String> = store
        .list("")
        .await?
        .into_iter()
        .filter_map(|object| object.key.strip_suffix("/cluster.json").map(str::to_string))
        .filter(|cluster| !cluster.contains('/'))
        .collect();
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
