//! Honeycomb's configuration: layers, precedence, errors that name the setting.

use std::path::Path;
use std::time::Duration;

use honeycomb::config::mask_url;
use honeycomb::{Config, ConfigError, Layer, Origin};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_listen_on_8780_with_sqlite_in_the_data_dir_and_the_registry_on_5055() {
    let c = Config::resolve(None, Layer::default(), Layer::default()).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8780");
    assert_eq!(c.registry, "127.0.0.1:5055");
    assert_eq!(c.backend_url(), "sqlite://honeycomb-data/hive.db");
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.origin("listen"), Origin::Default);
}

#[test]
fn file_then_environment_then_flags_each_later_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("honeycomb.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9001\"\nregistry = \"10.0.0.5:5055\"\ndata_dir = \"/var/lib/hc\"\nshutdown_grace = \"5s\"\n",
    )
    .unwrap();
    let file = Layer::from_file(&path).unwrap();
    let environment = Layer::from_env(env(&[
        ("HONEYCOMB_LISTEN", "127.0.0.1:9002"),
        ("HONEYCOMB_REGISTRY", "10.0.0.6:5055"),
        ("PATH", "/usr/bin"),
    ]))
    .unwrap();
    let flags = Layer {
        listen: Some("127.0.0.1:9003".into()),
        ..Layer::default()
    };
    let c = Config::resolve(Some((&path, file)), environment, flags).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:9003");
    assert_eq!(c.origin("listen"), Origin::Flag("--listen"));
    assert_eq!(c.registry, "10.0.0.6:5055");
    assert_eq!(c.origin("registry"), Origin::Env("HONEYCOMB_REGISTRY"));
    assert_eq!(c.data_dir, Path::new("/var/lib/hc"));
    assert_eq!(c.origin("data_dir"), Origin::File(path.clone()));
    assert_eq!(c.shutdown_grace, Duration::from_secs(5));
    assert_eq!(c.backend_url(), "sqlite:///var/lib/hc/hive.db");
}

#[test]
fn an_unknown_key_in_the_file_is_an_error_naming_it_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("honeycomb.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:9001\"\nlistn = \"x\"\n").unwrap();
    let err = Layer::from_file(&path).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(
        text.contains("`listn`") && text.contains("line 2"),
        "{text}"
    );
    let missing = Layer::from_file(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing:?}");
    std::fs::write(&path, "listen = [1, 2\n").unwrap();
    assert!(matches!(
        Layer::from_file(&path),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn an_unknown_honeycomb_variable_is_an_error_naming_it() {
    let err = Layer::from_env(env(&[("HONEYCOMB_LISTN", "x")])).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownEnv { name } if name == "HONEYCOMB_LISTN"));
    assert!(
        err.to_string().contains("HONEYCOMB_LISTEN"),
        "lists the known ones: {err}"
    );
    // The config file's own variable is not a setting, and other variables are ignored.
    assert_eq!(
        Layer::from_env(env(&[("HONEYCOMB_CONFIG", "/x.toml"), ("HOME", "/root")])).unwrap(),
        Layer::default()
    );
}

#[test]
fn bad_values_name_the_setting_and_where_it_came_from() {
    let cases = [
        (
            Layer {
                listen: Some("nope".into()),
                ..Layer::default()
            },
            "listen",
            "--listen",
        ),
        (
            Layer {
                listen: Some("127.0.0.1".into()),
                ..Layer::default()
            },
            "listen",
            "--listen",
        ),
        (
            Layer {
                shutdown_grace: Some("soon".into()),
                ..Layer::default()
            },
            "shutdown_grace",
            "--shutdown-grace",
        ),
        (
            Layer {
                backend: Some("hive.db".into()),
                ..Layer::default()
            },
            "backend",
            "--backend",
        ),
        (
            Layer {
                data_dir: Some(" ".into()),
                ..Layer::default()
            },
            "data_dir",
            "--data-dir",
        ),
        (
            Layer {
                registry: Some("".into()),
                ..Layer::default()
            },
            "registry",
            "--registry",
        ),
    ];
    for (flags, setting, flag) in cases {
        let err = Config::resolve(None, Layer::default(), flags).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, ConfigError::Invalid { setting: s, .. } if *s == setting),
            "{err:?}"
        );
        assert!(text.contains(flag), "{text}");
    }
    let err = Config::resolve(
        None,
        Layer::from_env(env(&[("HONEYCOMB_LISTEN", ":::")])).unwrap(),
        Layer::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("HONEYCOMB_LISTEN"), "{err}");
}

#[test]
fn the_rendered_configuration_masks_secrets_and_names_each_origin() {
    let environment = Layer::from_env(env(&[(
        "HONEYCOMB_BACKEND",
        "postgres://hive:s3cret@db:5432/hive?sslmode=disable&auth_token=abc",
    )]))
    .unwrap();
    let c = Config::resolve(None, environment, Layer::default()).unwrap();
    let text = c.render();
    assert!(!text.contains("s3cret") && !text.contains("abc"), "{text}");
    assert!(text.contains("postgres://hive:****@db:5432/hive"), "{text}");
    assert!(
        text.contains("# the environment variable HONEYCOMB_BACKEND"),
        "{text}"
    );
    assert!(
        text.contains("listen = \"127.0.0.1:8780\"  # the default"),
        "{text}"
    );
    // What is printed parses back as TOML with the same keys.
    let back: Layer = toml::from_str(
        &text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  #").next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    assert_eq!(back.listen.as_deref(), Some("127.0.0.1:8780"));
    assert_eq!(
        mask_url("redis://:pw@127.0.0.1:6379/0"),
        "redis://:****@127.0.0.1:6379/0"
    );
    assert_eq!(mask_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    assert_eq!(mask_url("not a url"), "not a url");
}

#[test]
fn the_metrics_token_is_masked_and_the_rate_limit_is_checked() {
    let environment = Layer::from_env(env(&[
        ("HONEYCOMB_METRICS_TOKEN", "scrape-secret"),
        ("HONEYCOMB_RATE_LIMIT", "50"),
    ]))
    .unwrap();
    let c = Config::resolve(None, environment, Layer::default()).unwrap();
    assert_eq!(c.rate_limit, 50);
    assert_eq!(c.metrics_token.as_deref(), Some("scrape-secret"));
    let limits = c.api_limits();
    assert_eq!((limits.rate_per_second, limits.rate_burst), (50, 100));
    let text = c.render();
    assert!(!text.contains("scrape-secret"), "{text}");
    assert!(text.contains("metrics_token = \"****\""), "{text}");
    let err = Config::resolve(
        None,
        Layer::default(),
        Layer {
            rate_limit: Some("fast".into()),
            ..Layer::default()
        },
    )
    .unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("rate_limit") && line.contains("--rate-limit"),
        "{line}"
    );
    let c = Config::resolve(None, Layer::default(), Layer::default()).unwrap();
    assert_eq!(c.rate_limit, 2000);
    assert!(c.metrics_token.is_none());
}

#[test]
fn retention_is_off_by_default_and_reaches_the_engine() {
    let c = Config::resolve(None, Layer::default(), Layer::default()).unwrap();
    assert_eq!((c.retention, c.retention_delete), (None, None));
    assert!(!c.engine().retention.enabled());
    assert!(c.render().contains("retention = \"off\""), "{}", c.render());
    let environment = Layer::from_env(env(&[
        ("HONEYCOMB_RETENTION", "7d"),
        ("HONEYCOMB_RETENTION_DELETE", "30d"),
    ]))
    .unwrap();
    let c = Config::resolve(None, environment, Layer::default()).unwrap();
    let day = Duration::from_secs(86_400);
    assert_eq!(c.retention, Some(7 * day));
    assert_eq!(c.retention_delete, Some(30 * day));
    let engine = c.engine().retention;
    assert_eq!(
        (engine.keep_ended, engine.delete_ended),
        (Some(7 * day), Some(30 * day))
    );
    assert_eq!(c.origin("retention"), Origin::Env("HONEYCOMB_RETENTION"));
    // Bad values name the setting; deleting needs compaction.
    for (layer, setting) in [
        (
            Layer {
                retention: Some("soon".into()),
                ..Layer::default()
            },
            "retention",
        ),
        (
            Layer {
                retention: Some("0s".into()),
                ..Layer::default()
            },
            "retention",
        ),
        (
            Layer {
                retention_delete: Some("30d".into()),
                ..Layer::default()
            },
            "retention_delete",
        ),
    ] {
        match Config::resolve(None, Layer::default(), layer) {
            Err(e) => assert!(e.to_string().contains(setting), "{e}"),
            Ok(_) => panic!("{setting}: accepted"),
        }
    }
}
