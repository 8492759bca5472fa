use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, Row, params};

use super::models::{format_time, parse_time};
use super::{Store, StoreError};
use crate::domain::{
    EnvVar, Event, EventKind, EventSubject, GpuClaim, ModelId, Service, ServiceId, StartPhase,
};

/// Events kept per service; older ones are dropped as new ones arrive.
pub const EVENTS_KEPT_PER_SERVICE: i64 = 500;

const COLUMNS: &str = "id, name, model_id, engine, port, status, status_reason, container_id, \
                       gpu_memory_utilization, env, created_at, updated_at, \
                       idle_timeout_ms, load_timeout_ms, max_concurrency, pinned, is_default, \
                       restart_policy, restarts, restarts_in_a_row, next_restart_at, last_exit_code, \
                       running_since, start_timeout_ms, health_interval_ms, health_retries, \
                       gpu_index";

/// Why a service could not be inserted.
#[derive(Debug, thiserror::Error)]
pub enum InsertServiceError {
    #[error("port {0} is already held by another service")]
    PortTaken(u16),
    #[error("model {0} does not exist")]
    NoSuchModel(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// This AIMA home's instance id, created on first use. Containers carry it as the
    /// `aima.instance` label, so two homes on one host never touch each other's containers.
    pub fn instance_id(&self) -> Result<String, StoreError> {
        let conn = self.conn();
        let existing: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'instance_id'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(id);
        }
        let id = format!(
            "{}{}",
            crate::domain::random_hex8(),
            crate::domain::random_hex8()
        );
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('instance_id', ?1)",
            [&id],
        )?;
        Ok(id)
    }

    /// Ports held by services; a port stays held across stops until the service is deleted.
    pub fn held_ports(&self) -> Result<BTreeSet<u16>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT port FROM services")?;
        let ports = stmt.query_map([], |r| r.get::<_, u16>(0))?;
        Ok(ports.collect::<Result<_, _>>()?)
    }

    /// Inserts a service. The UNIQUE port column is the last word on port ownership, so
    /// two concurrent creates can never both get one port.
    pub fn insert_service(&self, service: &Service) -> Result<(), InsertServiceError> {
        let result = self.conn().execute(
            &format!("INSERT INTO services ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)"),
            params![
                service.id.as_str(),
                service.name,
                service.model_id.as_str(),
                service.engine,
                service.port,
                service.status.as_str(),
                service.status_reason,
                service.container_id,
                service.gpu_memory_utilization,
                encode_env(&service.env),
                format_time(service.created_at),
                format_time(service.updated_at),
                service.serving.idle_timeout.map(millis),
                millis(service.serving.load_timeout),
                service.serving.max_concurrency,
                service.serving.pinned,
                service.serving.default,
                service.restart.to_string(),
                service.restarts.total,
                service.restarts.in_a_row,
                service.restarts.next_at.map(format_time),
                service.restarts.last_exit_code,
                service.restarts.running_since.map(format_time),
                service.health.start_timeout.map(millis),
                millis(service.health.interval),
                service.health.retries,
                service.gpu_index,
            ],
        );
        match result {
            Ok(_) => {
                self.changed();
                Ok(())
            }
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                if msg.contains("services.port") {
                    Err(InsertServiceError::PortTaken(service.port))
                } else if msg.contains("services.name") {
                    Err(StoreError::NameTaken {
                        name: service.name.clone(),
                        holder: self.holder_of_name("services", &service.name)?,
                    }
                    .into())
                } else if msg.contains("FOREIGN KEY") {
                    Err(InsertServiceError::NoSuchModel(
                        service.model_id.to_string(),
                    ))
                } else {
                    Err(StoreError::Duplicate(service.id.to_string()).into())
                }
            }
            Err(e) => Err(StoreError::from(e).into()),
        }
    }

    /// Writes a service's state: status, reason, container and restart bookkeeping.
    pub fn save_service(&self, service: &Service) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE services SET status = ?2, status_reason = ?3, container_id = ?4, updated_at = ?5,
                restarts = ?6, restarts_in_a_row = ?7, next_restart_at = ?8, last_exit_code = ?9,
                running_since = ?10
             WHERE id = ?1",
            params![
                service.id.as_str(),
                service.status.as_str(),
                service.status_reason,
                service.container_id,
                format_time(service.updated_at),
                service.restarts.total,
                service.restarts.in_a_row,
                service.restarts.next_at.map(format_time),
                service.restarts.last_exit_code,
                service.restarts.running_since.map(format_time),
            ],
        )?;
        self.changed();
        Ok(())
    }

    /// Writes a service's settings (`service update`): engine env and GPU share, serving,
    /// restart and health settings. Returns whether the service exists.
    pub fn save_service_settings(&self, service: &Service) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "UPDATE services SET gpu_memory_utilization = ?2, env = ?3, idle_timeout_ms = ?4,
                load_timeout_ms = ?5, max_concurrency = ?6, pinned = ?7, is_default = ?8,
                restart_policy = ?9, start_timeout_ms = ?10, health_interval_ms = ?11,
                health_retries = ?12, updated_at = ?13, gpu_index = ?14, port = ?15
             WHERE id = ?1",
            params![
                service.id.as_str(),
                service.gpu_memory_utilization,
                encode_env(&service.env),
                service.serving.idle_timeout.map(millis),
                millis(service.serving.load_timeout),
                service.serving.max_concurrency,
                service.serving.pinned,
                service.serving.default,
                service.restart.to_string(),
                service.health.start_timeout.map(millis),
                millis(service.health.interval),
                service.health.retries,
                format_time(service.updated_at),
                service.gpu_index,
                service.port,
            ],
        );
        let changed = match changed {
            Ok(changed) => changed,
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.contains("services.port") =>
            {
                return Err(StoreError::PortHeld(service.port));
            }
            Err(e) => return Err(e.into()),
        };
        self.changed();
        Ok(changed == 1)
    }

    /// All services, oldest first.
    pub fn list_services(&self) -> Result<Vec<Service>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM services ORDER BY seq"))?;
        let rows = stmt.query_map([], RawService::from_row)?;
        rows.map(|raw| raw?.into_service()).collect()
    }

    pub fn get_service(&self, id: &ServiceId) -> Result<Option<Service>, StoreError> {
        let raw = self
            .conn()
            .prepare_cached(&format!("SELECT {COLUMNS} FROM services WHERE id = ?1"))?
            .query_row([id.as_str()], RawService::from_row)
            .optional()?;
        raw.map(RawService::into_service).transpose()
    }

    /// Ids of the services that run `model`.
    pub fn services_of_model(&self, model: &ModelId) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id FROM services WHERE model_id = ?1 ORDER BY seq")?;
        let ids = stmt.query_map([model.as_str()], |r| r.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// Deletes a service; returns whether it existed. Its history stays (an audit trail
    /// in the global stream), and the history of deleted services is bounded to the
    /// newest [`DELETED_EVENTS_KEPT`] events.
    pub fn delete_service(&self, id: &ServiceId) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let deleted = tx.execute("DELETE FROM services WHERE id = ?1", [id.as_str()])? == 1;
        trim_deleted_history(&tx, DELETED_EVENTS_KEPT)?;
        tx.commit()?;
        self.changed();
        Ok(deleted)
    }

    /// Records (or clears) where a service's engine sits on a GPU and what it claims.
    pub fn set_gpu_placement(
        &self,
        id: &ServiceId,
        placement: Option<(&str, u64)>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE services SET gpu_uuid = ?2, gpu_claim_mib = ?3 WHERE id = ?1",
            params![
                id.as_str(),
                placement.map(|p| p.0),
                placement.map(|p| i64::try_from(p.1).unwrap_or(i64::MAX))
            ],
        )?;
        self.changed();
        Ok(())
    }

    /// Records the GPU share a start chose for a service that named none (`None`: the
    /// service's own setting or the engine's default holds).
    pub fn set_placed_share(&self, id: &ServiceId, share: Option<f64>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE services SET placed_share = ?2 WHERE id = ?1",
            params![id.as_str(), share],
        )?;
        Ok(())
    }

    /// The share the last start chose, if it chose one.
    pub fn placed_share(&self, id: &ServiceId) -> Result<Option<f64>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT placed_share FROM services WHERE id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// GPU memory held by services that are starting or running; a stopped or failed
    /// service's claim is released by its status alone.
    pub fn gpu_claims(&self) -> Result<Vec<GpuClaim>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, gpu_uuid, gpu_claim_mib FROM services
             WHERE gpu_uuid IS NOT NULL AND status IN ('starting', 'running') ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(GpuClaim {
                service_id: r.get(0)?,
                gpu_uuid: r.get(1)?,
                claim_mib: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keeps the last log lines of a container that is about to be removed.
    pub fn save_last_logs(&self, id: &ServiceId, logs: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE services SET last_logs = ?2 WHERE id = ?1",
            params![id.as_str(), logs],
        )?;
        Ok(())
    }

    pub fn last_logs(&self, id: &ServiceId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_logs FROM services WHERE id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Stores an event, assigning its `seq`, and trims the service's history.
    pub fn insert_event(&self, event: &mut Event) -> Result<(), StoreError> {
        let (kind, detail) = encode_kind(event.kind);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO events (subject, at, kind, detail, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                event.subject.as_str(),
                format_time(event.at),
                kind,
                detail,
                event.message
            ],
        )?;
        event.seq = tx.last_insert_rowid();
        tx.execute(
            "DELETE FROM events WHERE subject = ?1 AND seq <= ?2 - ?3
             AND seq NOT IN (SELECT seq FROM events WHERE subject = ?1 ORDER BY seq DESC LIMIT ?3)",
            params![event.subject.as_str(), event.seq, EVENTS_KEPT_PER_SERVICE],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest event's sequence number, 0 when there is none.
    pub fn latest_event_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Stored events after `after_seq`, oldest first; for one service or all.
    pub fn events(
        &self,
        subject: Option<&EventSubject>,
        after_seq: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, subject, at, kind, detail, message FROM events
             WHERE seq > ?1 AND (?2 IS NULL OR subject = ?2) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![after_seq, subject.map(EventSubject::as_str)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, subject, at, kind, detail, message) = row?;
            Ok(Event {
                seq,
                subject: subject
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?,
                at: parse_time(&at)?,
                kind: decode_kind(&kind, detail.as_deref())
                    .ok_or_else(|| StoreError::Corrupt(format!("event {seq}: kind {kind}")))?,
                message,
            })
        })
        .collect()
    }
}

/// Events of deleted services kept, oldest dropped first.
pub const DELETED_EVENTS_KEPT: i64 = 10_000;

/// Keeps only the newest `keep` events of services that no longer exist.
fn trim_deleted_history(conn: &rusqlite::Connection, keep: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM events WHERE seq IN (
            SELECT seq FROM events
            WHERE subject NOT IN (SELECT id FROM services) AND subject NOT IN (SELECT id FROM models)
            ORDER BY seq DESC LIMIT -1 OFFSET ?1)",
        [keep],
    )
}

fn encode_kind(kind: EventKind) -> (&'static str, Option<&'static str>) {
    match kind {
        EventKind::Phase(phase) => ("phase", Some(phase.as_str())),
        EventKind::Status(status) => ("status", Some(status.as_str())),
        EventKind::Note => ("note", None),
        EventKind::Created => ("created", None),
        EventKind::Restarted => ("restarted", None),
        EventKind::Deleted => ("deleted", None),
    }
}

fn decode_kind(kind: &str, detail: Option<&str>) -> Option<EventKind> {
    match (kind, detail) {
        ("phase", Some(p)) => StartPhase::parse(p).map(EventKind::Phase),
        ("status", Some(s)) => s.parse().ok().map(EventKind::Status),
        ("note", _) => Some(EventKind::Note),
        ("created", _) => Some(EventKind::Created),
        ("restarted", _) => Some(EventKind::Restarted),
        ("deleted", _) => Some(EventKind::Deleted),
        _ => None,
    }
}

/// `KEY=VALUE` lines; values cannot hold newlines (the domain refuses them).
fn encode_env(env: &[EnvVar]) -> String {
    env.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn decode_env(text: &str) -> Result<Vec<EnvVar>, StoreError> {
    text.lines()
        .map(|line| {
            line.parse()
                .map_err(|e| StoreError::Corrupt(format!("env: {e}")))
        })
        .collect()
}

struct RawService {
    id: String,
    name: String,
    model_id: String,
    engine: String,
    port: u16,
    status: String,
    status_reason: Option<String>,
    container_id: Option<String>,
    gpu_memory_utilization: Option<f64>,
    env: String,
    created_at: String,
    updated_at: String,
    idle_timeout_ms: Option<i64>,
    load_timeout_ms: i64,
    max_concurrency: Option<u32>,
    pinned: bool,
    is_default: bool,
    restart_policy: String,
    restarts: u32,
    restarts_in_a_row: u32,
    next_restart_at: Option<String>,
    last_exit_code: Option<i64>,
    running_since: Option<String>,
    start_timeout_ms: Option<i64>,
    health_interval_ms: i64,
    health_retries: u32,
    gpu_index: Option<u32>,
}

/// A duration as stored: whole milliseconds.
fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl RawService {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            model_id: row.get(2)?,
            engine: row.get(3)?,
            port: row.get(4)?,
            status: row.get(5)?,
            status_reason: row.get(6)?,
            container_id: row.get(7)?,
            gpu_memory_utilization: row.get(8)?,
            env: row.get(9)?,
            created_at: row.get(10)?,
            updated_at: row.get(11)?,
            idle_timeout_ms: row.get(12)?,
            load_timeout_ms: row.get(13)?,
            max_concurrency: row.get(14)?,
            pinned: row.get(15)?,
            is_default: row.get(16)?,
            restart_policy: row.get(17)?,
            restarts: row.get(18)?,
            restarts_in_a_row: row.get(19)?,
            next_restart_at: row.get(20)?,
            last_exit_code: row.get(21)?,
            running_since: row.get(22)?,
            start_timeout_ms: row.get(23)?,
            health_interval_ms: row.get(24)?,
            health_retries: row.get(25)?,
            gpu_index: row.get(26)?,
        })
    }

    fn into_service(self) -> Result<Service, StoreError> {
        let corrupt =
            |e: crate::domain::Invalid| StoreError::Corrupt(format!("service {}: {e}", self.id));
        Ok(Service {
            id: self.id.parse().map_err(corrupt)?,
            model_id: self.model_id.parse().map_err(corrupt)?,
            status: self.status.parse().map_err(corrupt)?,
            env: decode_env(&self.env)?,
            created_at: parse_time(&self.created_at)?,
            updated_at: parse_time(&self.updated_at)?,
            name: self.name,
            engine: self.engine,
            port: self.port,
            status_reason: self.status_reason,
            container_id: self.container_id,
            gpu_memory_utilization: self.gpu_memory_utilization,
            gpu_index: self.gpu_index,
            serving: crate::domain::ServingPolicy {
                idle_timeout: self.idle_timeout_ms.map(from_millis),
                load_timeout: from_millis(self.load_timeout_ms),
                max_concurrency: self.max_concurrency,
                pinned: self.pinned,
                default: self.is_default,
            },
            restart: self.restart_policy.parse().map_err(corrupt)?,
            restarts: crate::domain::Restarts {
                total: self.restarts,
                in_a_row: self.restarts_in_a_row,
                next_at: self
                    .next_restart_at
                    .as_deref()
                    .map(parse_time)
                    .transpose()?,
                last_exit_code: self.last_exit_code,
                running_since: self.running_since.as_deref().map(parse_time).transpose()?,
            },
            health: crate::domain::HealthChecks {
                start_timeout: self.start_timeout_ms.map(from_millis),
                interval: from_millis(self.health_interval_ms),
                retries: self.health_retries,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::{Model, ModelSpec, ServiceStatus};
    use crate::store::temp_store;

    fn model(store: &Store) -> ModelId {
        let spec = ModelSpec::new("m", "ollama", Some("r"), None).expect("valid");
        let model = Model::register(spec, ModelId::random(), Utc::now());
        store.insert_model(&model).expect("insert model");
        model.id
    }

    fn service(model: &ModelId, port: u16) -> Service {
        let env = vec!["STUB_FAIL=oom".parse().expect("env")];
        let id = ServiceId::random("vllm");
        Service::create(
            id.clone(),
            format!("s-{}", &id.as_str()[9..]),
            model.clone(),
            "vllm".into(),
            port,
            Some(0.5),
            env,
            Utc::now(),
        )
    }

    #[test]
    fn services_round_trip_and_ports_are_unique() {
        let (_dir, store) = temp_store();
        let m = model(&store);
        let a = service(&m, 8000);
        let before = store.generation();
        store.insert_service(&a).expect("insert");
        assert!(
            store.generation() > before,
            "a write changes the generation"
        );
        assert!(matches!(
            store.insert_service(&service(&m, 8000)),
            Err(InsertServiceError::PortTaken(8000))
        ));
        assert_eq!(store.held_ports().expect("ports"), [8000].into());
        let got = store.get_service(&a.id).expect("get").expect("exists");
        assert_eq!(got, a);
        assert_eq!(
            store.services_of_model(&m).expect("of model"),
            [a.id.to_string()]
        );
    }

    #[test]
    fn a_model_in_use_cannot_be_deleted() {
        let (_dir, store) = temp_store();
        let m = model(&store);
        store.insert_service(&service(&m, 8000)).expect("insert");
        assert!(matches!(
            store.delete_model(&m),
            Err(StoreError::Referenced(_))
        ));
        assert!(store.get_model(&m).expect("get").is_some());
    }

    #[test]
    fn services_need_an_existing_model() {
        let (_dir, store) = temp_store();
        let ghost = ModelId::random();
        assert!(matches!(
            store.insert_service(&service(&ghost, 8000)),
            Err(InsertServiceError::NoSuchModel(_))
        ));
    }

    #[test]
    fn status_changes_are_saved() {
        let (_dir, store) = temp_store();
        let m = model(&store);
        let mut s = service(&m, 8001);
        store.insert_service(&s).expect("insert");
        s.status = ServiceStatus::Failed;
        s.status_reason = Some("boom".into());
        s.container_id = Some("abc".into());
        store.save_service(&s).expect("save");
        store.save_last_logs(&s.id, "line 1\nline 2").expect("logs");
        let got = store.get_service(&s.id).expect("get").expect("exists");
        assert_eq!(got.status, ServiceStatus::Failed);
        assert_eq!(got.status_reason.as_deref(), Some("boom"));
        assert_eq!(
            store.last_logs(&s.id).expect("logs").as_deref(),
            Some("line 1\nline 2")
        );
        assert!(store.delete_service(&s.id).expect("delete"));
        assert!(
            store.held_ports().expect("ports").is_empty(),
            "delete frees the port"
        );
    }

    #[test]
    fn events_are_numbered_filtered_and_bounded() {
        let (_dir, store) = temp_store();
        let a = ServiceId::random("vllm");
        let b = ServiceId::random("vllm");
        for i in 0..(EVENTS_KEPT_PER_SERVICE + 20) {
            let mut e = Event::new(
                a.clone(),
                EventKind::Phase(StartPhase::Health),
                format!("a{i}"),
                Utc::now(),
            );
            store.insert_event(&mut e).expect("insert");
        }
        let mut e = Event::new(
            b.clone(),
            EventKind::Status(ServiceStatus::Running),
            "up",
            Utc::now(),
        );
        store.insert_event(&mut e).expect("insert");
        let of_a = store.events(Some(&a.clone().into()), 0).expect("events");
        assert_eq!(of_a.len() as i64, EVENTS_KEPT_PER_SERVICE);
        assert_eq!(
            of_a.last().expect("last").message,
            format!("a{}", EVENTS_KEPT_PER_SERVICE + 19)
        );
        let after = store
            .events(None, of_a.last().expect("last").seq)
            .expect("events");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].kind, EventKind::Status(ServiceStatus::Running));
    }

    #[test]
    fn a_deleted_services_history_stays_bounded_with_the_other_deleted_ones() {
        let (_dir, store) = temp_store();
        let m = model(&store);
        let (kept, gone) = (service(&m, 8100), service(&m, 8101));
        for s in [&kept, &gone] {
            store.insert_service(s).expect("insert");
            for i in 0..3 {
                let mut e = Event::new(s.id.clone(), EventKind::Note, format!("{i}"), Utc::now());
                store.insert_event(&mut e).expect("event");
            }
        }
        assert!(store.delete_service(&gone.id).expect("delete"));
        assert_eq!(
            store
                .events(Some(&gone.id.clone().into()), 0)
                .expect("events")
                .len(),
            3
        );
        // Past the bound, the oldest events of deleted services go; live services keep theirs.
        let conn = store.conn();
        assert_eq!(trim_deleted_history(&conn, 1).expect("trim"), 2);
        drop(conn);
        let left = store
            .events(Some(&gone.id.clone().into()), 0)
            .expect("events");
        assert_eq!(
            left.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["2"]
        );
        assert_eq!(
            store
                .events(Some(&kept.id.clone().into()), 0)
                .expect("events")
                .len(),
            3
        );
    }

    #[test]
    fn instance_id_is_stable() {
        let (_dir, store) = temp_store();
        let id = store.instance_id().expect("id");
        assert_eq!(id.len(), 16);
        assert_eq!(store.instance_id().expect("id again"), id);
    }
}
