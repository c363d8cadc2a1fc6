use super::*;
use crate::backend::memory::MemoryConfig;
use crate::backend::oss::OssConfig;
use crate::backend::s3::S3Config;

/// The settings of the backend serving `scheme`, when it is served.
fn settings<T: Clone + 'static>(c: &Config, scheme: &str) -> Option<T> {
    let backend = c.backend(scheme)?;
    Some(
        backend
            .settings
            .as_any()
            .downcast_ref::<T>()
            .expect("settings of another type")
            .clone(),
    )
}

/// Whether `scheme` is served.
fn served(c: &Config, scheme: &str) -> bool {
    c.backend(scheme).is_some()
}

#[test]
fn flat_and_nested_keys_are_the_same() {
    let flat = Config::from_yaml(
        "fs.default-scheme: memory://demo/\nmemory.upload.min.part.size: 100kb\n",
    )
    .unwrap();
    let nested = Config::from_yaml(
            "fs:\n  default-scheme: memory://demo/\nmemory:\n  upload:\n    min:\n      part:\n        size: 100kb\n",
        )
        .unwrap();
    assert_eq!(flat.default_scheme, nested.default_scheme);
    for c in [&flat, &nested] {
        let memory: MemoryConfig = settings(c, "memory").unwrap();
        assert_eq!(memory.upload.part_size, 100 * 1024);
    }
}

/// Found by cargo fuzz: `fs.limit.<what>` (no scheme) panicked.
#[test]
fn a_limit_key_without_a_scheme_is_unknown_not_a_panic() {
    let c = Config::from_yaml(
        "fs.limit.total: 3
fs.limit.: x
",
    )
    .unwrap();
    assert_eq!(c.unknown_keys, ["fs.limit.", "fs.limit.total"]);
    assert!(c.limits.is_empty());
}

#[test]
fn unknown_keys_are_reported() {
    let c = Config::from_yaml("fs.defualt-scheme: file:///\ntaskmanager.numberOfTaskSlots: 4\n")
        .unwrap();
    assert_eq!(
        c.unknown_keys,
        vec!["fs.defualt-scheme", "taskmanager.numberOfTaskSlots"]
    );
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "fs.default-scheme: file:///\n").unwrap();
    let env = [(
        "SLUICE_FS_DEFAULT_SCHEME".to_string(),
        "memory://x/".to_string(),
    )];
    let c = Config::load(Some(&file), env).unwrap();
    assert_eq!(c.default_scheme.scheme, "memory");
}

#[test]
fn environment_overrides_patterned_and_backend_keys() {
    let env = [
        ("SLUICE_FS_S3_LIMIT_OUTPUT", "2"),
        ("SLUICE_MEMORY_ENTROPY_KEY", "_e_"),
        ("SLUICE_AUTH_PRINCIPALS_JOB_TOKEN_SHA256", &"ab".repeat(32)),
        ("SLUICE_AUTH_PRINCIPALS_JOB_PREFIXES", "memory://jobs/"),
        ("SLUICE_S3_PATH_STYLE_ACCESS", "true"),
        ("HOME", "/root"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let c = Config::load(None, env).unwrap();
    assert_eq!(c.limits["s3"].output, Some(2));
    assert_eq!(c.entropy["memory"].key, "_e_");
    assert_eq!(c.principals[0].name, "job");
    assert_eq!(c.principals[0].prefixes, ["memory://jobs/"]);
    let s3: S3Config = settings(&c, "s3").unwrap();
    assert!(s3.path_style);
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
}

#[test]
fn cloud_schemes_are_served_only_when_configured() {
    let none = Config::from_yaml("").unwrap();
    assert!(
        ["s3", "s3a", "oss", "gs", "az", "abfs", "abfss", "hdfs"]
            .iter()
            .all(|s| !served(&none, s))
    );
    assert!(served(&none, "file") && served(&none, "memory"));
    let c = Config::from_yaml(
            "s3.endpoint: http://127.0.0.1:9000\ns3.path.style.access: true\ns3.upload.min.part.size: 8mb\n\
             fs.oss.endpoint: https://oss-cn-hangzhou.aliyuncs.com\noss.upload.min.part.size: 100kb\n",
        )
        .unwrap();
    let s3: S3Config = settings(&c, "s3a").unwrap();
    assert!(s3.path_style && !s3.virtual_hosted);
    assert_eq!(s3.upload.part_size, 8 << 20);
    let OssConfig(oss) = settings(&c, "oss").unwrap();
    assert!(oss.virtual_hosted);
    assert_eq!(oss.upload.part_size, 100 << 10);
}

#[test]
fn hdfs_keys() {
    use crate::backend::hdfs::HdfsConfig;
    let c = Config::from_yaml("fs.defaultFS: hdfs://nn.example:8020\nhdfs.user: flink\n").unwrap();
    let hdfs: HdfsConfig = settings(&c, "hdfs").unwrap();
    assert_eq!(
        hdfs.namenodes,
        ["nn.example:8020"],
        "the default FS's NameNode"
    );
    assert_eq!(hdfs.user.as_deref(), Some("flink"));
    let c = Config::from_yaml(
        "fs.defaultFS: hdfs://mycluster\nfs.hdfs.namenodes: mycluster, nn2.example:8020\n",
    )
    .unwrap();
    let hdfs: HdfsConfig = settings(&c, "hdfs").unwrap();
    assert_eq!(hdfs.namenodes, ["mycluster", "nn2.example:8020"]);
    for bad in [
        "fs.defaultFS: s3://bucket",
        "fs.defaultFS: hdfs:///",
        "fs.hdfs.hadoopconf: /no/such/folder",
    ] {
        assert!(Config::from_yaml(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn limit_keys() {
    let c = Config::from_yaml(
            "fs.s3.limit.output: 2\nfs.s3.limit.total: -1\nfs.s3.limit.timeout: 200\nfs.oss.limit.input: 0\n",
        )
        .unwrap();
    assert!(
        !served(&c, "s3") && !served(&c, "oss"),
        "limits alone do not configure a scheme"
    );
    let s3 = c.limits["s3"];
    assert_eq!((s3.output, s3.total, s3.input), (Some(2), None, None));
    assert_eq!(s3.timeout, Some(std::time::Duration::from_millis(200)));
    assert_eq!(c.limits["oss"].input, None);
    for bad in [
        "fs.s3.limit.output: -2",
        "fs.s3.limit.output: many",
        "fs.s3.limit.speed: 1",
    ] {
        assert!(Config::from_yaml(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn entropy_keys() {
    let c = Config::from_yaml(
        "s3.entropy.key: _entropy_\nmemory.entropy.key: __e\nmemory.entropy.length: 8\n",
    )
    .unwrap();
    assert!(
        !served(&c, "s3"),
        "an entropy key alone does not configure s3://"
    );
    assert_eq!(
        c.entropy["s3"],
        EntropyConfig {
            key: "_entropy_".into(),
            length: 4
        }
    );
    assert_eq!(c.entropy["memory"].length, 8);
    for bad in [
        "s3.entropy.key: a*b",
        "s3.entropy.key: '%e'",
        "s3.entropy.key: a/b",
        "s3.entropy.key: ''",
        "s3.entropy.key: _e_\ns3.entropy.length: 0",
        "s3.entropy.length: 4",
    ] {
        assert!(Config::from_yaml(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn the_janitor_interval_defaults_to_at_most_the_ttl() {
    let c = Config::from_yaml("janitor.ttl: 2s\n").unwrap();
    assert_eq!(
        c.janitor.interval.as_secs(),
        2,
        "interval defaults to at most the TTL"
    );
}

#[test]
fn bad_values_are_start_up_errors() {
    for bad in [
        "s3.upload.min.part.size: 1mb",
        "oss.upload.min.part.size: 99kb",
        "fs.oss.accessKeyId: x",
        "fs.oss.endpoint: https://e\nfs.oss.proxy.host: h",
        "s3.path.style.access: maybe",
        "janitor.ttl: forever",
        "fs.default-scheme: nowhere",
        "memory.upload.min.part.size: 0",
        "memory.upload.max.concurrent.uploads: 0",
        "fs.file.allowed-roots: relative/dir",
        "handle.signing.key: abcd",
        "handle.signing.key: not-hex",
    ] {
        assert!(Config::from_yaml(bad).is_err(), "{bad} was accepted");
    }
}
