//! The compact stored forms of a task: its core split into short binary and
//! JSON fields, event kinds in a short text form, spec ids and the redirect of
//! long values to the task's side hash. Every value of a task hash should fit
//! Redis's small (listpack) encoding, which holds values of at most
//! `hash-max-listpack-value` (64) bytes: a hash in the large encoding costs the
//! server an allocation per field and a hash lookup per access.
//!
//! Decoding never trusts the bytes: anything malformed is `Error::Backend`.

use hive_core::clock::Timestamp;
use hive_core::id::{LeaseId, NodeId};
use hive_core::task::machine::{AcceptedReport, Lease, ReportKind, TaskCore};
use hive_core::task::{EventKind, TaskState};
use hive_core::{Error, Result};

use super::decode::{bad_json, cannot_encode, corrupt};

/// The longest value stored in a task hash itself; a longer one is stored in
/// the task's side hash and the task hash holds `~{side field}`.
pub(super) const INLINE_MAX: usize = 64;

/// The first byte of a redirect. No stored form starts with it: binary cores
/// and reports start with a byte below 0x40, JSON with `{`, `[`, `"`, a digit,
/// `t`, `f` or `n`, events with a time.
pub(super) const REDIRECT: u8 = b'~';

/// A value to store under `field` of a task changing to `seq`: inline when
/// short, else a redirect in the task hash plus the value under a side field
/// named after the field and the seq (written once, never changed, so that a
/// reader holding a redirect always finds what it names).
pub(super) fn place(
    field: &str,
    seq: u64,
    value: Vec<u8>,
    main: &mut Vec<(String, Vec<u8>)>,
    side: &mut Vec<(String, Vec<u8>)>,
) {
    if value.len() <= INLINE_MAX {
        main.push((field.to_owned(), value));
    } else {
        let name = format!("{field}{seq}");
        main.push((field.to_owned(), format!("~{name}").into_bytes()));
        side.push((name, value));
    }
}

/// The side field a stored value redirects to, if it is a redirect.
pub(super) fn redirect(value: &[u8]) -> Option<&[u8]> {
    match value.split_first() {
        Some((&REDIRECT, name)) => Some(name),
        _ => None,
    }
}

/// A value written once at submit under `field`: inline when short, else a
/// redirect plus the value for `{field}1` of the side hash (the second value,
/// else empty).
pub(super) fn once(field: &str, value: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    if value.len() <= INLINE_MAX {
        (value, Vec::new())
    } else {
        (format!("~{field}1").into_bytes(), value)
    }
}

// ----- what never changes ---------------------------------------------------------

/// A task's fixed facts but tenant and input, as its field `x`:
/// `{created} {spec id} {key length|-} {key}{principal}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fixed<'a> {
    pub(super) created: Timestamp,
    pub(super) spec: &'a str,
    pub(super) key: Option<&'a str>,
    pub(super) principal: &'a str,
}

impl<'a> Fixed<'a> {
    pub(super) fn text(&self) -> String {
        let created = self.created.as_millis();
        match self.key {
            None => format!("{created} {} -{}", self.spec, self.principal),
            Some(k) => format!("{created} {} {} {k}{}", self.spec, k.len(), self.principal),
        }
    }

    pub(super) fn of(x: &'a str) -> Result<Fixed<'a>> {
        let bad = || corrupt("a malformed stored task (x)");
        let (created, rest) = x.split_once(' ').ok_or_else(bad)?;
        let (spec, rest) = rest.split_once(' ').ok_or_else(bad)?;
        let created = Timestamp::from_millis(created.parse().map_err(|_| bad())?);
        let (key, principal) = match rest.strip_prefix('-') {
            Some(principal) => (None, principal),
            None => {
                let (len, rest) = rest.split_once(' ').ok_or_else(bad)?;
                let len: usize = len.parse().map_err(|_| bad())?;
                if !rest.is_char_boundary(len.min(rest.len())) || len > rest.len() {
                    return Err(bad());
                }
                let (key, principal) = rest.split_at(len);
                (Some(key), principal)
            }
        };
        Ok(Fixed {
            created,
            spec,
            key,
            principal,
        })
    }
}

// ----- ids ----------------------------------------------------------------------

/// A content id: SHA-256 over the length-prefixed parts, as 64 hex digits.
/// Collision resistant, so two different contents (a queue's owner, agent and
/// labels) never share an id; whoever stores under one still checks
/// that what is there is theirs (a record written by something else).
pub(super) fn content_id(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for bytes in parts {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// A spec's id: SHA-256 of its JSON cut to 128 bits, as 32 hex digits. Short,
/// so that a task's fixed fields (`x`: time, spec id, principal) stay inline
/// in its hash (a value over [`INLINE_MAX`] bytes costs a side-hash write at
/// submit and a read at every claim). A spec id needs no more: it is stored
/// with `SET NX` and compared, and a different spec found under it moves the
/// new one to `{id}-1`, `{id}-2`, … (see `store_specs`).
pub(super) fn spec_id(json: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(json)[..16])
}

fn uuid_from(bytes: &[u8]) -> Result<u128> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt("a stored id of the wrong length"))?;
    Ok(u128::from_be_bytes(arr))
}

fn hex32(v: u128) -> String {
    format!("{v:032x}")
}

fn node_of(v: u128) -> Result<NodeId> {
    hex32(v)
        .parse()
        .map_err(|_| corrupt("a stored node id does not parse"))
}

fn lease_of(v: u128) -> Result<LeaseId> {
    hex32(v)
        .parse()
        .map_err(|_| corrupt("a stored lease id does not parse"))
}

// ----- binary primitives ------------------------------------------------------------

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    put_var(out, zigzag(v));
}

/// Reads a binary value; every overrun is corrupt data.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn bad(&self) -> Error {
        corrupt(format_args!("a malformed stored {}", self.what))
    }

    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.bytes.split_first().ok_or_else(|| self.bad())?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(self.bad());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn var(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.bad());
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad())
    }

    fn u32(&mut self) -> Result<u32> {
        u32::try_from(self.var()?).map_err(|_| self.bad())
    }

    fn int(&mut self) -> Result<i64> {
        Ok(unzigzag(self.var()?))
    }

    fn id(&mut self) -> Result<u128> {
        uuid_from(self.take(16)?)
    }

    fn end(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.bad())
        }
    }
}

fn state_index(s: TaskState) -> u8 {
    TaskState::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

fn state_at(i: u8) -> Result<TaskState> {
    TaskState::ALL
        .get(usize::from(i))
        .copied()
        .ok_or_else(|| corrupt("a stored task state out of range"))
}

// ----- the core ---------------------------------------------------------------------

const F_NODE: u8 = 1;
const F_AVOID: u8 = 2;
const F_LEASE: u8 = 4;
const F_LEASE_NODE: u8 = 8;
const F_STARTED: u8 = 16;
const F_LEASE_ATTEMPT: u8 = 32;
/// In the state byte: the report (`<< 0`), output (`<< 1`), error (`<< 2`)
/// follow inside `c`.
const INLINE_PART: u8 = 8;
/// In the state byte: some of report, output and error are in their own
/// fields (without it, those fields are not read: see `CLAIM_PREPARE`).
pub(super) const APART: u8 = 64;
/// The trailing byte of `c` when the lease's last event is its heartbeat.
const BEAT_IS_LAST: u8 = 1;

/// A core as stored: `c` (binary: state, attempt, seq, times, node, avoided
/// node, lease), `r` (binary: the last accepted report), `o` (output JSON),
/// `err` (error JSON). An empty or missing `r`, `o`, `err` is none; each of
/// them goes inside `c` instead (and its field is empty) while `c` stays
/// within [`INLINE_MAX`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CoreFields {
    pub(super) c: Vec<u8>,
    pub(super) r: Vec<u8>,
    pub(super) o: Vec<u8>,
    pub(super) err: Vec<u8>,
}

/// The names of the core's fields, in [`CoreFields`] order.
pub(super) const CORE_FIELDS: [&str; 4] = ["c", "r", "o", "err"];

impl CoreFields {
    pub(super) fn of(core: &TaskCore) -> Result<CoreFields> {
        let mut c = Vec::with_capacity(64);
        let lease = core.lease.as_ref();
        let mut flags = 0;
        if core.node.is_some() {
            flags |= F_NODE;
        }
        if core.avoid_node.is_some() {
            flags |= F_AVOID;
        }
        if let Some(l) = lease {
            flags |= F_LEASE;
            if Some(l.node) != core.node {
                flags |= F_LEASE_NODE;
            }
            if l.started_at.is_some() {
                flags |= F_STARTED;
            }
            if l.attempt != core.attempt {
                flags |= F_LEASE_ATTEMPT;
            }
        }
        c.push(flags);
        c.push(state_index(core.state));
        put_var(&mut c, u64::from(core.attempt));
        put_var(&mut c, core.last_seq);
        let avail = core.available_at.as_millis();
        let updated = core.updated_at.as_millis();
        put_int(&mut c, avail);
        put_int(&mut c, updated.wrapping_sub(avail));
        if let Some(n) = core.node {
            c.extend_from_slice(&n.as_u128().to_be_bytes());
        }
        if let Some(n) = core.avoid_node {
            c.extend_from_slice(&n.as_u128().to_be_bytes());
        }
        if let Some(l) = lease {
            c.extend_from_slice(&l.id.as_u128().to_be_bytes());
            if flags & F_LEASE_NODE != 0 {
                c.extend_from_slice(&l.node.as_u128().to_be_bytes());
            }
            if flags & F_LEASE_ATTEMPT != 0 {
                put_var(&mut c, u64::from(l.attempt));
            }
            let granted = l.granted_at.as_millis();
            put_int(&mut c, granted.wrapping_sub(updated));
            if let Some(s) = l.started_at {
                put_int(&mut c, s.as_millis().wrapping_sub(granted));
            }
            put_int(&mut c, l.last_heartbeat.as_millis().wrapping_sub(granted));
        }
        let mut r = Vec::new();
        if let Some(rep) = &core.last_report {
            let kind = match rep.kind {
                ReportKind::Success => 0,
                ReportKind::Failure => 1,
            };
            r.push(kind | (state_index(rep.state) << 1));
            r.extend_from_slice(&rep.lease.as_u128().to_be_bytes());
            put_var(&mut r, rep.seq);
        }
        let json = |v: Option<Vec<u8>>| v.unwrap_or_default();
        let mut parts = [
            r,
            json(
                core.output
                    .as_ref()
                    .map(serde_json::to_vec)
                    .transpose()
                    .map_err(cannot_encode)?,
            ),
            json(
                core.error
                    .as_ref()
                    .map(serde_json::to_vec)
                    .transpose()
                    .map_err(cannot_encode)?,
            ),
        ];
        // Report, output and error go inside `c` (length-prefixed, flagged in
        // the state byte) while it stays short: fewer fields to write and read.
        for (k, part) in parts.iter_mut().enumerate() {
            if part.is_empty() {
                continue;
            }
            let mut len = Vec::new();
            put_var(&mut len, part.len() as u64);
            if c.len() + len.len() + part.len() <= INLINE_MAX {
                c[1] |= INLINE_PART << k;
                c.extend_from_slice(&len);
                c.append(part);
            }
        }
        if parts.iter().any(|p| !p.is_empty()) {
            c[1] |= APART;
        }
        // The lease's `beat_is_last`, as a trailing byte after everything
        // else (absent: false), so cores stored before it decode unchanged.
        if lease.is_some_and(|l| l.beat_is_last) {
            c.push(BEAT_IS_LAST);
        }
        let [r, o, err] = parts;
        Ok(CoreFields { c, r, o, err })
    }

    /// The values in [`CORE_FIELDS`] order.
    pub(super) fn values(&self) -> [&[u8]; 4] {
        [&self.c, &self.r, &self.o, &self.err]
    }
}

/// Decodes a core from its stored fields (`None` = missing).
pub(super) fn core_from(
    c: &[u8],
    r: Option<&[u8]>,
    o: Option<&[u8]>,
    err: Option<&[u8]>,
) -> Result<TaskCore> {
    let mut rd = Reader {
        bytes: c,
        what: "task core",
    };
    let flags = rd.byte()?;
    if flags >= 0x40 {
        return Err(rd.bad());
    }
    let state_byte = rd.byte()?;
    if state_byte & 0x80 != 0 {
        return Err(rd.bad());
    }
    let state = state_at(state_byte & 0x07)?;
    let attempt = rd.u32()?;
    let last_seq = rd.var()?;
    let avail = rd.int()?;
    let updated = avail.wrapping_add(rd.int()?);
    let node = if flags & F_NODE != 0 {
        Some(node_of(rd.id()?)?)
    } else {
        None
    };
    let avoid_node = if flags & F_AVOID != 0 {
        Some(node_of(rd.id()?)?)
    } else {
        None
    };
    let lease = if flags & F_LEASE != 0 {
        let id = lease_of(rd.id()?)?;
        let lnode = if flags & F_LEASE_NODE != 0 {
            node_of(rd.id()?)?
        } else {
            node.ok_or_else(|| rd.bad())?
        };
        let lattempt = if flags & F_LEASE_ATTEMPT != 0 {
            rd.u32()?
        } else {
            attempt
        };
        let granted = updated.wrapping_add(rd.int()?);
        let started = if flags & F_STARTED != 0 {
            Some(granted.wrapping_add(rd.int()?))
        } else {
            None
        };
        let hb = granted.wrapping_add(rd.int()?);
        Some(Lease {
            id,
            node: lnode,
            attempt: lattempt,
            granted_at: Timestamp::from_millis(granted),
            started_at: started.map(Timestamp::from_millis),
            last_heartbeat: Timestamp::from_millis(hb),
            beat_is_last: false,
        })
    } else {
        if flags & (F_LEASE_NODE | F_STARTED | F_LEASE_ATTEMPT) != 0 {
            return Err(rd.bad());
        }
        None
    };
    // Parts inside `c` take the place of their fields.
    let mut inline: [Option<&[u8]>; 3] = [None; 3];
    for (k, slot) in inline.iter_mut().enumerate() {
        if state_byte & (INLINE_PART << k) != 0 {
            let len = usize::try_from(rd.var()?).map_err(|_| rd.bad())?;
            let part = rd.take(len)?;
            if part.is_empty() {
                return Err(rd.bad());
            }
            *slot = Some(part);
        }
    }
    let beat_is_last = match rd.bytes {
        [] => false,
        [BEAT_IS_LAST] if lease.is_some() => true,
        _ => return Err(rd.bad()),
    };
    let lease = lease.map(|l| Lease { beat_is_last, ..l });
    let [ri, oi, erri] = inline;
    let (r, o, err) = if state_byte & APART != 0 {
        (ri.or(r), oi.or(o), erri.or(err))
    } else {
        (ri, oi, erri)
    };
    let last_report = match r {
        None | Some([]) => None,
        Some(r) => {
            let mut rd = Reader {
                bytes: r,
                what: "task report",
            };
            let head = rd.byte()?;
            let kind = if head & 1 == 0 {
                ReportKind::Success
            } else {
                ReportKind::Failure
            };
            let state = state_at(head >> 1)?;
            let lease = lease_of(rd.id()?)?;
            let seq = rd.var()?;
            rd.end()?;
            Some(AcceptedReport {
                lease,
                kind,
                seq,
                state,
            })
        }
    };
    let output = match o {
        None | Some([]) => None,
        Some(b) => Some(serde_json::from_slice(b).map_err(|e| bad_json("task output", e))?),
    };
    let error = match err {
        None | Some([]) => None,
        Some(b) => Some(serde_json::from_slice(b).map_err(|e| bad_json("task error", e))?),
    };
    Ok(TaskCore {
        state,
        attempt,
        lease,
        node,
        last_seq,
        available_at: Timestamp::from_millis(avail),
        last_report,
        output,
        error,
        updated_at: Timestamp::from_millis(updated),
        avoid_node,
    })
}

// ----- event kinds -----------------------------------------------------------------

/// An event kind as stored in events and feed entries: `q` (queued),
/// `s {node}` (scheduled), `r {node} {attempt}` (started), `h {node}
/// {attempt}` (a heartbeat without progress), else the kind's JSON.
pub(super) fn kind_text(kind: &EventKind) -> Result<String> {
    Ok(match kind {
        EventKind::Queued => "q".to_owned(),
        EventKind::Scheduled { node } => format!("s {node}"),
        EventKind::Started { node, attempt } => format!("r {node} {attempt}"),
        EventKind::Heartbeat {
            node,
            attempt,
            progress: None,
        } => format!("h {node} {attempt}"),
        other => serde_json::to_string(other).map_err(cannot_encode)?,
    })
}

/// Reads an event kind written by [`kind_text`].
pub(super) fn kind_of(text: &str) -> Result<EventKind> {
    let bad = || corrupt(format_args!("an event kind of the wrong shape: {text:?}"));
    if text.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| bad_json("event kind", e));
    }
    let node = |s: &str| s.parse::<NodeId>().map_err(|_| bad());
    let node_attempt = |s: &str| -> Result<(NodeId, u32)> {
        let (n, a) = s.split_once(' ').ok_or_else(bad)?;
        Ok((node(n)?, a.parse().map_err(|_| bad())?))
    };
    match text.split_at_checked(2) {
        _ if text == "q" => Ok(EventKind::Queued),
        Some(("s ", rest)) => Ok(EventKind::Scheduled { node: node(rest)? }),
        Some(("r ", rest)) => {
            let (node, attempt) = node_attempt(rest)?;
            Ok(EventKind::Started { node, attempt })
        }
        Some(("h ", rest)) => {
            let (node, attempt) = node_attempt(rest)?;
            Ok(EventKind::Heartbeat {
                node,
                attempt,
                progress: None,
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_core::task::TaskError;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn cores() -> Vec<TaskCore> {
        let base = TaskCore::submitted(t(1_795_598_888_607));
        let n = NodeId::new();
        let mut leased = base.clone();
        leased.state = TaskState::Running;
        leased.attempt = 3;
        leased.node = Some(n);
        leased.updated_at = t(1_795_598_899_000);
        leased.lease = Some(Lease {
            id: LeaseId::new(),
            node: n,
            attempt: 3,
            granted_at: t(1_795_598_890_000),
            started_at: Some(t(1_795_598_890_005)),
            last_heartbeat: t(1_795_598_898_000),
            beat_is_last: true,
        });
        let mut odd = leased.clone();
        if let Some(l) = odd.lease.as_mut() {
            l.node = NodeId::new();
            l.attempt = 7;
            l.started_at = None;
            l.granted_at = t(i64::MIN);
            l.last_heartbeat = t(i64::MAX);
            l.beat_is_last = false;
        }
        odd.available_at = t(-5);
        odd.updated_at = t(i64::MAX);
        odd.last_seq = u64::MAX;
        odd.attempt = u32::MAX;
        let mut done = base.clone();
        done.state = TaskState::Succeeded;
        done.node = Some(n);
        done.avoid_node = Some(NodeId::new());
        done.output = Some(serde_json::json!({"a": [1, 2.5, "x"], "long": "y".repeat(200)}));
        done.error = Some(TaskError::new("code", "message").non_retryable());
        done.last_report = Some(AcceptedReport {
            lease: LeaseId::new(),
            kind: ReportKind::Failure,
            seq: 9,
            state: TaskState::TimedOut,
        });
        let mut null_out = base.clone();
        null_out.output = Some(serde_json::Value::Null);
        let mut all_inline = base.clone();
        all_inline.output = Some(serde_json::json!(1));
        all_inline.error = Some(TaskError::new("e", ""));
        all_inline.last_report = done.last_report;
        vec![base, leased, odd, done, null_out, all_inline]
    }

    #[test]
    fn cores_round_trip_exactly() {
        for core in cores() {
            let f = CoreFields::of(&core).unwrap();
            assert!(f.c[0] < 0x40 && f.r.first().is_none_or(|b| *b < 0x40));
            let opt = |v: &[u8]| (!v.is_empty()).then_some(v.to_vec());
            let back = core_from(
                &f.c,
                opt(&f.r).as_deref(),
                opt(&f.o).as_deref(),
                opt(&f.err).as_deref(),
            )
            .unwrap();
            assert_eq!(back, core);
        }
        let typical = &cores()[1];
        assert!(CoreFields::of(typical).unwrap().c.len() <= INLINE_MAX);
        let inline = CoreFields::of(&cores()[5]).unwrap();
        assert!(inline.r.is_empty() && inline.o.is_empty() && inline.err.is_empty());
        assert!(inline.c.len() <= INLINE_MAX);
        let apart = CoreFields::of(&cores()[3]).unwrap();
        assert!(!apart.o.is_empty());
    }

    #[test]
    fn malformed_cores_are_errors_not_panics() {
        let f = CoreFields::of(&cores()[1]).unwrap();
        // The last byte is the optional `beat_is_last` trailer: without it the
        // core is whole, with the beat unset.
        let n = f.c.len() - 1;
        assert_eq!(f.c[n], BEAT_IS_LAST);
        let cut = core_from(&f.c[..n], None, None, None).unwrap();
        assert!(!cut.lease.unwrap().beat_is_last);
        for n in 0..n {
            assert!(
                core_from(&f.c[..n], None, None, None).is_err(),
                "cut at {n}"
            );
        }
        let mut long = f.c.clone();
        long.push(0);
        assert!(core_from(&long, None, None, None).is_err());
        let mut unleased = CoreFields::of(&cores()[0]).unwrap().c;
        unleased.push(BEAT_IS_LAST);
        assert!(
            core_from(&unleased, None, None, None).is_err(),
            "a beat without a lease"
        );
        assert!(core_from(&[0x40, 0, 0, 0, 0, 0], None, None, None).is_err());
        assert!(core_from(&[0, 9, 0, 0, 0, 0], None, None, None).is_err());
        assert!(
            core_from(
                &[0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                None,
                None,
                None
            )
            .is_err()
        );
        // Fields apart are read only when `c` says so.
        let mut c = CoreFields::of(&cores()[0]).unwrap().c;
        assert_eq!(
            core_from(&c, Some(b"\x00abc"), Some(b"{"), None).unwrap(),
            cores()[0]
        );
        c[1] |= APART;
        assert!(core_from(&c, Some(b"\x00abc"), None, None).is_err());
        assert!(core_from(&c, None, Some(b"{"), None).is_err());
        assert!(core_from(&c, None, None, Some(b"1")).is_err());
        // Random bytes never panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 70) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 * 5) & 0x3f) as u8)
                .collect();
            let _ = core_from(&bytes, Some(&bytes), None, None);
        }
    }

    #[test]
    fn kinds_round_trip_and_stay_short() {
        let n = NodeId::new();
        let kinds = [
            EventKind::Queued,
            EventKind::Scheduled { node: n },
            EventKind::Started {
                node: n,
                attempt: u32::MAX,
            },
            EventKind::Heartbeat {
                node: n,
                attempt: 2,
                progress: None,
            },
            EventKind::Heartbeat {
                node: n,
                attempt: 2,
                progress: Some(serde_json::json!(0.5)),
            },
            EventKind::Succeeded {
                output: serde_json::Value::Null,
            },
        ];
        for k in kinds {
            let text = kind_text(&k).unwrap();
            assert_eq!(kind_of(&text).unwrap(), k);
            assert!(format!("1795598888607 {text}").len() <= INLINE_MAX || text.starts_with('{'));
        }
        for bad in ["", "x", "s", "s nope", "r 1 2", "h x", "q ", "{", "é"] {
            assert!(kind_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fixed_facts_round_trip() {
        for key in [None, Some(""), Some("k 1"), Some("é-9 x")] {
            for principal in ["", "alice", "a b-c", "-"] {
                let f = Fixed {
                    created: t(-17),
                    spec: "0123abcd",
                    key,
                    principal,
                };
                assert_eq!(Fixed::of(&f.text()).unwrap(), f);
            }
        }
        for bad in ["", "1", "1 s", "x s -p", "1 s 9 ab", "1 s 1 é", "1 s z ab"] {
            assert!(Fixed::of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_values_are_redirected() {
        let (mut main, mut side) = (Vec::new(), Vec::new());
        place("o", 4, b"null".to_vec(), &mut main, &mut side);
        place("o", 4, vec![b'x'; 65], &mut main, &mut side);
        assert_eq!(main[0], ("o".to_owned(), b"null".to_vec()));
        assert_eq!(main[1], ("o".to_owned(), b"~o4".to_vec()));
        assert_eq!(side, vec![("o4".to_owned(), vec![b'x'; 65])]);
        assert_eq!(redirect(b"~o4"), Some(&b"o4"[..]));
        assert_eq!(redirect(b"null"), None);
    }
}
