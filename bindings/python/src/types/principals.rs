//! Principals and tokens.

use super::*;

/// Who is calling. Every engine call takes one as its first argument.
#[pyclass(module = "hive._hive", frozen)]
#[derive(Clone)]
pub(crate) struct Principal {
    pub(crate) inner: hive::Principal,
}

#[pymethods]
impl Principal {
    /// A user of `tenant` with the default user scopes.
    #[staticmethod]
    fn user(tenant: &str, id: &str) -> Self {
        Principal {
            inner: hive::Principal::user(tenant, id),
        }
    }

    /// An operator of `tenant`: may also cancel others' tasks and read the audit.
    #[staticmethod]
    fn operator(tenant: &str, id: &str) -> Self {
        Principal {
            inner: hive::Principal::operator(tenant, id),
        }
    }

    /// An admin of `tenant`.
    #[staticmethod]
    fn admin(tenant: &str, id: &str) -> Self {
        Principal {
            inner: hive::Principal::admin(tenant, id),
        }
    }

    /// Hive itself: every scope, across tenants (needed for system nodes).
    #[staticmethod]
    fn system() -> Self {
        Principal {
            inner: hive::Principal::system(),
        }
    }

    /// The same principal with exactly these scopes (`"task:submit"`, …).
    fn with_scopes(&self, py: Python<'_>, scopes: Vec<String>) -> PyResult<Self> {
        Ok(Principal {
            inner: self.inner.clone().with_scopes(parse_scopes(py, &scopes)?),
        })
    }

    /// The tenant it acts in.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.tenant.as_str()
    }

    /// Its name within the tenant.
    #[getter]
    fn id(&self) -> &str {
        self.inner.id.as_str()
    }

    /// `user`, `operator`, `admin`, `worker` or `system`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.name()
    }

    /// Its scopes, as wire names.
    #[getter]
    fn scopes(&self) -> Vec<&'static str> {
        self.inner.scopes.iter().map(|s| s.as_str()).collect()
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Principal>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.tenant.hash(&mut h);
        self.inner.id.hash(&mut h);
        self.inner.kind.hash(&mut h);
        self.inner.scopes.hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        format!(
            "Principal.{}({}, {})",
            self.inner.kind.name(),
            py_str(self.inner.tenant.as_str()),
            py_str(self.inner.id.as_str())
        )
    }
}

/// Scopes from their wire names.
pub(crate) fn parse_scopes(py: Python<'_>, scopes: &[String]) -> PyResult<hive::Scopes> {
    let mut set = hive::Scopes::empty();
    for s in scopes {
        let scope: hive::Scope =
            serde_json::from_value(Value::String(s.clone())).map_err(|_| {
                let known: Vec<&str> = hive::Scope::ALL.iter().map(|s| s.as_str()).collect();
                crate::errors::invalid_argument(
                    py,
                    format!("unknown scope {s:?}; known: {}", known.join(", ")),
                )
            })?;
        set = set.with(scope);
    }
    Ok(set)
}

/// An API token without its secret.
#[pyclass(module = "hive._hive", frozen)]
pub(crate) struct TokenInfo {
    inner: hive::iam::TokenInfo,
}

impl From<hive::iam::TokenInfo> for TokenInfo {
    fn from(inner: hive::iam::TokenInfo) -> Self {
        TokenInfo { inner }
    }
}

#[pymethods]
impl TokenInfo {
    /// The token id (the public part of the token).
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }

    /// The tenant it acts in.
    #[getter]
    fn tenant(&self) -> &str {
        self.inner.tenant.as_str()
    }

    /// The principal it stands for.
    #[getter]
    fn principal_id(&self) -> &str {
        self.inner.principal.as_str()
    }

    /// `user`, `operator` or `admin`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.as_str()
    }

    /// Its scopes.
    #[getter]
    fn scopes(&self) -> Vec<&'static str> {
        self.inner.scopes.iter().map(|s| s.as_str()).collect()
    }

    /// What it is for.
    #[getter]
    fn description(&self) -> &str {
        &self.inner.description
    }

    /// Who issued it.
    #[getter]
    fn issued_by(&self) -> &str {
        self.inner.issued_by.as_str()
    }

    /// When it was issued.
    #[getter]
    fn issued_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.inner.issued_at)
    }

    /// When it stops resolving (never when `None`).
    #[getter]
    fn expires_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.expires_at)
    }

    /// When it was revoked.
    #[getter]
    fn revoked_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.inner.revoked_at)
    }

    /// The principal it stands for (a worker token's: the worker of its node).
    fn to_principal(&self) -> PyResult<Principal> {
        match self.inner.to_principal() {
            Some(inner) => Ok(Principal { inner }),
            None => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "token {} is a worker token without a node",
                self.inner.id
            ))),
        }
    }

    /// The JSON form.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<hive.TokenInfo {} principal={} kind={}>",
            self.inner.id,
            py_str(self.inner.principal.as_str()),
            self.inner.kind
        )
    }
}
