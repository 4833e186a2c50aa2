//! The repository is hostile (design rule 13): this cluster signs what it writes, refuses what it
//! did not sign, and adopts a backstop 0.2 repository only when the DBA says so.

#[pgrx::pg_schema]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use backstop_core::codec::{self, CodecSettings};
    use backstop_core::layout;
    use pgrx::prelude::*;

    use crate::pgrx_tests::{error_of, one_text};
    use crate::{io, repo};

    const ROOT: &str = "/tmp/backstop-pgrx-test-repo";

    fn use_namespace(name: &str) -> String {
        let namespace = format!("pgrx_{name}_{}", repo::system_identifier());
        let _ = std::fs::remove_dir_all(std::path::Path::new(ROOT).join(&namespace));
        Spi::run(&format!("SET backstop.cluster_name = '{namespace}'")).unwrap();
        namespace
    }

    /// Writes `plain` at `path` as backstop 0.2 did: format 1, checksums, no signature.
    fn write_unsigned(namespace: &str, path: &backstop_core::ObjectPath, plain: &[u8]) {
        let (encoded, _) = codec::encode_to_vec(&CodecSettings::plain(), plain, None).unwrap();
        let file = std::path::Path::new(ROOT).join(namespace).join(path.as_str());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, encoded).unwrap();
    }

    fn segment_path(n: u64) -> backstop_core::ObjectPath {
        let name = backstop_core::wal::segment_name(1, n, 16 << 20);
        layout::wal(&backstop_core::wal::WalFileName::parse(&name).unwrap())
    }

    #[pg_test]
    fn the_public_key_is_printable_and_the_private_key_stays_in_the_data_directory() {
        let key = one_text("SELECT backstop.repository_key()");
        assert!(key.starts_with("ed25519:") && key.len() == 8 + 64, "{key}");
        assert_eq!(one_text("SELECT backstop.repository_key()"), key, "one key per cluster");
        let file = repo::data_dir().join("backstop_signing.key");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is private to the server's user", file.display());
        // Not a setting, not in any view: only its public half is shown.
        assert!(!one_text("SELECT string_agg(setting, ',') FROM pg_settings WHERE name LIKE 'backstop.%'")
            .contains(&std::fs::read_to_string(&file).unwrap_or_default().trim().to_string()));
        // Refused to PUBLIC like every backstop function.
        Spi::run("CREATE ROLE key_reader LOGIN").unwrap();
        let error = error_of(Some("key_reader"), "SELECT backstop.repository_key()").expect("refused");
        assert!(error.starts_with("42501"), "{error}");
    }

    #[pg_test]
    fn objects_this_cluster_did_not_sign_are_refused_until_adopted_and_forgeries_never() {
        let namespace = use_namespace("adopt");
        let me = repo::system_identifier().to_string();
        // A namespace as backstop 0.2 left it: cluster.json, two segments, and a damaged manifest.
        let cluster = format!(
            r#"{{"format_version":1,"cluster":"{namespace}","system_identifier":"{me}","pg_version_num":150000,"wal_segment_size":16777216,"created_at_unix":0,"created_by":"backstop 0.2.0"}}"#
        );
        write_unsigned(&namespace, &layout::cluster_file(), cluster.as_bytes());
        write_unsigned(&namespace, &segment_path(1), &[1u8; 4096]);
        write_unsigned(&namespace, &segment_path(2), &[2u8; 4096]);
        let broken = layout::logical(
            "app",
            &backstop_core::logical::LogicalId::parse("20261122T031500Z-L").unwrap(),
            layout::LogicalFile::Manifest,
        );
        write_unsigned(&namespace, &broken, b"not a manifest");

        let repository = repo::open().unwrap();
        let refused = io::block_on(repository.get_bytes(&segment_path(1))).unwrap_err();
        assert!(matches!(refused, backstop_core::Error::Unauthenticated { .. }), "{refused}");
        let doctor =
            one_text("SELECT status || ': ' || detail FROM backstop.doctor() WHERE \"check\" = 'repository_signing'");
        assert!(doctor.starts_with("warn") && doctor.contains("not adopted"), "{doctor}");

        let (adopted, refused_count, record) =
            Spi::get_three::<i64, i64, String>("SELECT adopted, refused, record FROM backstop.adopt_repository()")
                .unwrap();
        assert_eq!(
            (adopted, refused_count),
            (Some(3), Some(1)),
            "cluster.json and two segments; not the damaged manifest"
        );
        assert!(record.is_some());
        let repository = repo::open().unwrap();
        assert_eq!(io::block_on(repository.get_bytes(&segment_path(1))).unwrap(), vec![1u8; 4096]);
        assert!(matches!(
            io::block_on(repository.get_bytes(&broken)),
            Err(backstop_core::Error::Unauthenticated { .. })
        ));
        let doctor = one_text("SELECT status FROM backstop.doctor() WHERE \"check\" = 'repository_signing'");
        assert_eq!(doctor, "ok");

        // After the adoption: an unsigned object added, or an adopted one replaced, is refused.
        write_unsigned(&namespace, &segment_path(3), &[3u8; 4096]);
        write_unsigned(&namespace, &segment_path(2), &[9u8; 4096]);
        let repository = repo::open().unwrap();
        for n in [2, 3] {
            let error = io::block_on(repository.get_bytes(&segment_path(n))).unwrap_err();
            assert!(matches!(error, backstop_core::Error::Unauthenticated { .. }), "segment {n}: {error}");
        }
        // Adopting again vouches for what is new, never for what was replaced since.
        let (adopted, refused_count) =
            Spi::get_two::<i64, i64>("SELECT adopted, refused FROM backstop.adopt_repository()").unwrap();
        assert_eq!((adopted, refused_count), (Some(1), Some(2)), "segment 3 adopted; segment 2 and the manifest not");
        let repository = repo::open().unwrap();
        assert!(io::block_on(repository.get_bytes(&segment_path(2))).is_err());
    }

    /// Peak and current private memory of this backend, in bytes (VmHWM, RssAnon).
    fn memory() -> (u64, u64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
        };
        (kib("VmHWM:"), kib("RssAnon:"))
    }

    #[pg_test]
    fn a_manifest_that_inflates_to_10_gib_is_refused_by_doctor_and_backups_in_bounded_memory() {
        let namespace = use_namespace("bomb");
        // One zstd frame of 128 KiB of zeros, repeated: 81 920 frames decode to 10 GiB, stored in ~2 MB.
        let frame_plain = vec![0u8; 128 << 10];
        let settings = CodecSettings::new(codec::Compression::zstd(3).unwrap(), vec![]);
        let (one, _) = codec::encode_to_vec(&settings, &frame_plain, None).unwrap();
        let frame = &one[codec::HEADER_LEN..one.len() - codec::TRAILER_LEN];
        let frames = (10u64 << 30) / frame_plain.len() as u64;
        let mut body = Vec::with_capacity(frame.len() * frames as usize);
        for _ in 0..frames {
            body.extend_from_slice(frame);
        }
        let body_hex = codec::sha256_hex(&body);
        let body_sha: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&body_hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        // The object as backstop 0.2 would have stored it (format 1): header, body, trailer.
        let object = |plain_len: u64| {
            let mut raw = one[..codec::HEADER_LEN].to_vec();
            raw.extend_from_slice(&body);
            raw.extend_from_slice(&[7u8; 32]); // sha256 of the plain bytes: never reached
            raw.extend_from_slice(&body_sha);
            raw.extend_from_slice(&plain_len.to_le_bytes());
            raw.extend_from_slice(&(body.len() as u64).to_le_bytes());
            raw.extend_from_slice(b"BKSTPEND");
            raw
        };
        let place = |id: &str, raw: Vec<u8>| {
            let id = backstop_core::backups::BackupId::parse(id).unwrap();
            let file = std::path::Path::new(ROOT).join(&namespace).join(layout::backup_manifest(&id).as_str());
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, raw).unwrap();
        };
        // Honest about its size: 10 GiB is more than a manifest may hold.
        place("20261120T010000Z-F", object(10 << 30));
        // Lying about its size: a 1 MiB trailer over a body that inflates to 10 GiB.
        place("20261121T010000Z-F", object(1 << 20));
        drop(body);

        let (peak_before, _) = memory();
        let rows = Spi::connect(|client| {
            client
                .select("SELECT backup_id, verified, problem FROM backstop.backups() ORDER BY backup_id", None, &[])
                .unwrap()
                .map(|row| {
                    (
                        row.get::<String>(1).unwrap().unwrap(),
                        row.get::<bool>(2).unwrap().unwrap(),
                        row.get::<String>(3).unwrap().unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(!rows[0].1 && rows[0].2.contains("more than a"), "{rows:?}");
        assert!(!rows[1].1 && rows[1].2.contains("signature"), "{rows:?}");
        let doctor = one_text("SELECT status || ': ' || detail FROM backstop.doctor() WHERE \"check\" = 'base_backup'");
        assert!(
            doctor.starts_with("fail: no complete base backup") && doctor.contains("20261121T010000Z-F"),
            "doctor refuses the manifests and says which: {doctor}"
        );
        // adopt_repository reads unsigned objects whole to vouch for them: it stops at the length
        // the trailer records and refuses both.
        let (adopted, refused) =
            Spi::get_two::<i64, i64>("SELECT adopted, refused FROM backstop.adopt_repository()").unwrap();
        assert_eq!((adopted, refused), (Some(0), Some(2)));
        let (peak_after, private_now) = memory();
        assert!(
            peak_after.saturating_sub(peak_before) < 100 << 20,
            "the backend's peak memory grew by {} MB",
            (peak_after - peak_before) >> 20
        );
        assert!(private_now < 100 << 20, "the backend holds {} MB of private memory", private_now >> 20);
    }
}
