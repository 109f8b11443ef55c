//! `RegistryConfig`: built in code, from the environment and from a URL, with
//! a clear error for each bad value. No registry needed.

use std::collections::HashMap;

use hive_registry::config::env;
use hive_registry::{AgentRef, AgentSigningKey, Channel, ConfigError, RegistryConfig};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

fn from_env(vars: &[(&str, &str)]) -> Result<RegistryConfig, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    RegistryConfig::from_env_with(|k| map.get(k).cloned())
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

#[test]
fn built_in_code_lays_out_repositories_and_identities() {
    let sandbox = AgentSigningKey::generate();
    let c = RegistryConfig::new("https://ghcr.io", "acme-org/agents")
        .unwrap()
        .with_trusted_key(Channel::Sandbox, sandbox.public_key().clone())
        .with_trusted_key(Channel::Sandbox, sandbox.public_key().clone());
    assert_eq!(c.trusted_keys.sandbox.len(), 1, "a key is trusted once");
    assert!(c.trusted_keys.production.is_empty());
    let r = AgentRef::new("acme", Channel::Production, "summarize", "1.0.0");
    assert_eq!(
        c.repository(&r),
        "acme-org/agents/acme/production/summarize"
    );
    assert_eq!(
        c.qualified(&c.repository(&r)),
        "ghcr.io/acme-org/agents/acme/production/summarize"
    );
    assert_eq!(
        c.parse_repository("acme-org/agents/acme/production/summarize"),
        Some(("acme".into(), Channel::Production, "summarize".into()))
    );
    assert_eq!(
        c.parse_repository("elsewhere/acme/production/summarize"),
        None
    );
    assert_eq!(
        c.parse_repository("acme-org/agents/acme/staging/summarize"),
        None
    );
    assert!(!c.is_plain_http());
    let local = RegistryConfig::new("http://127.0.0.1:55000", "hive").unwrap();
    assert_eq!(local.registry_host(), "127.0.0.1:55000");
    assert!(local.is_plain_http());
}

#[test]
fn from_env_reads_every_variable() {
    let f = Files::new();
    let sandbox = AgentSigningKey::generate();
    let prod_a = AgentSigningKey::generate();
    let prod_b = AgentSigningKey::generate();
    let s = f.write("sandbox.pub", sandbox.public_key().pem());
    let a = f.write("a.pub", prod_a.public_key().pem());
    let b = f.write("b.pub", prod_b.public_key().pem());
    let ca = f.write("ca.pem", &format!("{CERT}{CERT}"));
    let c = from_env(&[
        (env::URL, "https://registry.internal:5443"),
        (env::PREFIX, "/platform/agents/"),
        (env::SANDBOX_KEYS, &s),
        (env::PRODUCTION_KEYS, &format!("{a}, {b}")),
        (env::CA_FILE, &ca),
        (env::INSECURE_SKIP_VERIFY, "no"),
    ])
    .unwrap();
    assert_eq!(c.registry_host(), "registry.internal:5443");
    assert_eq!(c.repository_prefix, "platform/agents");
    assert_eq!(c.trusted_keys.sandbox, [sandbox.public_key().clone()]);
    assert_eq!(
        c.trusted_keys.production,
        [prod_a.public_key().clone(), prod_b.public_key().clone()]
    );
    assert_eq!(c.tls.ca_certificates_pem.len(), 2);
    assert!(!c.tls.accept_invalid_certificates);
    let minimal = from_env(&[(env::URL, "http://localhost:5000")]).unwrap();
    assert_eq!(minimal.repository_prefix, "hive");
}

#[test]
fn from_env_names_each_bad_value() {
    let f = Files::new();
    let not_a_key = f.write("bad.pub", "hello");
    let private = f.write("private.pem", &AgentSigningKey::generate().to_pkcs8_pem());
    let no_cert = f.write("ca.pem", "nothing here");
    let url = (env::URL, "https://r.example");

    let e = from_env(&[]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Missing { name } if name == env::URL),
        "{e}"
    );
    assert_eq!(e.to_string(), "HIVE_REGISTRY_URL is required");

    let e = from_env(&[(env::URL, "not a url")]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidUrl { name, .. } if name == env::URL),
        "{e}"
    );

    let e = from_env(&[(env::URL, "ftp://r.example")]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnsupportedScheme { scheme, .. } if scheme == "ftp"),
        "{e}"
    );

    let e = from_env(&[(env::URL, "http://r.example")]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InsecureHttp { host, opt_in, .. } if host == "r.example" && opt_in == env::ALLOW_HTTP),
        "{e}"
    );
    assert!(from_env(&[(env::URL, "http://r.example"), (env::ALLOW_HTTP, "true")]).is_ok());

    let e = from_env(&[(env::URL, "https://user:pw@r.example")]).unwrap_err();
    assert!(e.to_string().contains("credentials do not belong"), "{e}");

    let e = from_env(&[(env::URL, "https://r.example/some/path")]).unwrap_err();
    assert!(e.to_string().contains(env::PREFIX), "{e}");

    for bad in ["Upper/case", "a//b", "-lead", "x y"] {
        let e = from_env(&[url, (env::PREFIX, bad)]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::InvalidPrefix { name, value, .. } if name == env::PREFIX && value == bad),
            "{bad}: {e}"
        );
    }

    let e = from_env(&[url, (env::SANDBOX_KEYS, "/nonexistent/key.pub")]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::ReadFile { name, .. } if name == env::SANDBOX_KEYS),
        "{e}"
    );
    assert!(e.to_string().contains("/nonexistent/key.pub"), "{e}");

    let e = from_env(&[url, (env::PRODUCTION_KEYS, &not_a_key)]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidKey { name, origin, .. } if name == env::PRODUCTION_KEYS && *origin == not_a_key),
        "{e}"
    );

    let e = from_env(&[url, (env::SANDBOX_KEYS, &private)]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidKey { .. }),
        "a private key is not a trusted public key: {e}"
    );

    let e = from_env(&[url, (env::CA_FILE, &no_cert)]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidCertificate { name, .. } if name == env::CA_FILE),
        "{e}"
    );

    let e = from_env(&[url, (env::INSECURE_SKIP_VERIFY, "maybe")]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidBool { name, value } if name == env::INSECURE_SKIP_VERIFY && value == "maybe"),
        "{e}"
    );

    let e = from_env(&[(env::URL, "http://r.example"), (env::ALLOW_HTTP, "sure")]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidBool { name, .. } if name == env::ALLOW_HTTP),
        "{e}"
    );
}

#[test]
fn from_url_reads_prefix_keys_and_tls_settings() {
    let f = Files::new();
    let sandbox = AgentSigningKey::generate();
    let production = AgentSigningKey::generate();
    let s = f.write("s.pub", sandbox.public_key().pem());
    let p = f.write("p.pub", production.public_key().pem());
    let ca = f.write("ca.pem", CERT);
    let c = RegistryConfig::from_url(&format!(
        "https://ghcr.io/acme-org/agents?sandbox_key={s}&production_key={p}&ca_file={ca}&insecure_skip_verify=false"
    ))
    .unwrap();
    assert_eq!(c.url.as_str(), "https://ghcr.io/");
    assert_eq!(c.repository_prefix, "acme-org/agents");
    assert_eq!(c.trusted_keys.sandbox, [sandbox.public_key().clone()]);
    assert_eq!(c.trusted_keys.production, [production.public_key().clone()]);
    assert_eq!(c.tls.ca_certificates_pem.len(), 1);
    let plain = RegistryConfig::from_url("http://127.0.0.1:55000").unwrap();
    assert_eq!(plain.repository_prefix, "hive");
    assert!(RegistryConfig::from_url("http://r.internal:5000/x?allow_http=1").is_ok());
}

#[test]
fn from_url_names_each_bad_value() {
    let e = RegistryConfig::from_url("https://ghcr.io/x?colour=blue").unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownParameter { name } if name == "colour"),
        "{e}"
    );
    assert!(
        e.to_string().contains("sandbox_key"),
        "the error lists the known parameters: {e}"
    );
    let e = RegistryConfig::from_url("oci://ghcr.io/x").unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnsupportedScheme { scheme, .. } if scheme == "oci"),
        "{e}"
    );
    let e = RegistryConfig::from_url("http://r.internal/x").unwrap_err();
    assert!(
        matches!(&e, ConfigError::InsecureHttp { opt_in, .. } if opt_in == "allow_http"),
        "{e}"
    );
    let e = RegistryConfig::from_url("https://ghcr.io/x?insecure_skip_verify=perhaps").unwrap_err();
    assert!(
        matches!(&e, ConfigError::InvalidBool { name, .. } if name == "insecure_skip_verify"),
        "{e}"
    );
    let e = RegistryConfig::from_url("https://ghcr.io/x?sandbox_key=/missing.pub").unwrap_err();
    assert!(
        matches!(&e, ConfigError::ReadFile { name, .. } if name == "sandbox_key"),
        "{e}"
    );
    let e = RegistryConfig::from_url("https://ghcr.io/Bad_Prefix").unwrap_err();
    assert!(matches!(&e, ConfigError::InvalidPrefix { .. }), "{e}");
    let e = RegistryConfig::from_url("https://ghcr.io/x#frag").unwrap_err();
    assert!(matches!(&e, ConfigError::InvalidUrl { .. }), "{e}");
    let e = RegistryConfig::new("https://ghcr.io/with/path", "hive").unwrap_err();
    assert!(matches!(&e, ConfigError::InvalidUrl { .. }), "{e}");
}
