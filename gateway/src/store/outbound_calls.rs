//! Outbound call jobs (the dialer's), kept in the store rather than in memory: a callback that is
//! still waiting survives a restart of the gateway (the dialer resumes every open job at start),
//! and another node sharing the database can see it.
//!
//! The store does not interpret a job: it keeps the dialer's JSON document (`doc`) beside the
//! few columns its queries need (`open`, the two instants). Both back ends share the SQL text
//! here (`$n` placeholders, read as `?n` by SQLite, as for the SMS parts); SQLite writes on its
//! writer thread, PostgreSQL on a pooled connection.

use chrono::{DateTime, Utc};

use super::channel_ops::sqlite_sql;
use super::{StoreError, from_micros, micros};

/// One outbound call job as stored. The store does not interpret `doc` (the dialer's JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCall {
    pub id: String,
    /// Not yet final (queued, dialing, ringing, answered): the dialer resumes these at start.
    pub open: bool,
    /// The job as JSON text.
    pub doc: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Most jobs one [`calls_recent`](super::Store::calls_recent) answers, whatever was asked.
pub const MAX_RECENT: u32 = 1000;

/// Insert, or update everything but `created_at` (kept from the first insert).
pub(crate) const SQL_CALL_SAVE: &str = "INSERT INTO outbound_calls \
    (id, open, doc, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (id) DO UPDATE SET open = excluded.open, doc = excluded.doc, \
    updated_at = excluded.updated_at";
pub(crate) const SQL_CALL_GET: &str =
    "SELECT id, open, doc, created_at, updated_at FROM outbound_calls WHERE id = $1";
pub(crate) const SQL_CALLS_OPEN: &str = "SELECT id, open, doc, created_at, updated_at \
    FROM outbound_calls WHERE open = 1 ORDER BY created_at, id";
pub(crate) const SQL_CALLS_RECENT: &str = "SELECT id, open, doc, created_at, updated_at \
    FROM outbound_calls ORDER BY created_at DESC, id DESC LIMIT $1";

/// The limit of a `calls_recent` query, capped at [`MAX_RECENT`].
pub(crate) fn recent_limit(limit: u32) -> i64 {
    i64::from(limit.min(MAX_RECENT))
}

pub(crate) fn call_from_row(
    id: String,
    open: i64,
    doc: String,
    created_at: i64,
    updated_at: i64,
) -> StoredCall {
    StoredCall {
        id,
        open: open != 0,
        doc,
        created_at: from_micros(created_at),
        updated_at: from_micros(updated_at),
    }
}

pub(crate) mod sqlite {
    //! The SQLite side: saves on the writer thread, reads on a reader.
    use rusqlite::{Connection, OptionalExtension, Transaction, params};

    use super::*;

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCall> {
        Ok(call_from_row(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    }

    pub(crate) fn save(tx: &Transaction<'_>, call: &StoredCall) -> Result<(), StoreError> {
        tx.prepare_cached(&sqlite_sql(SQL_CALL_SAVE))?
            .execute(params![
                call.id,
                i64::from(call.open),
                call.doc,
                micros(call.created_at),
                micros(call.updated_at)
            ])?;
        Ok(())
    }

    pub(crate) fn get(c: &Connection, id: &str) -> Result<Option<StoredCall>, StoreError> {
        Ok(c.prepare_cached(&sqlite_sql(SQL_CALL_GET))?
            .query_row([id], row)
            .optional()?)
    }

    pub(crate) fn open(c: &Connection) -> Result<Vec<StoredCall>, StoreError> {
        Ok(c.prepare_cached(&sqlite_sql(SQL_CALLS_OPEN))?
            .query_map([], row)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn recent(c: &Connection, limit: u32) -> Result<Vec<StoredCall>, StoreError> {
        Ok(c.prepare_cached(&sqlite_sql(SQL_CALLS_RECENT))?
            .query_map([recent_limit(limit)], row)?
            .collect::<Result<Vec<_>, _>>()?)
    }
}

pub(crate) mod postgres {
    //! The PostgreSQL side, each statement on a pooled connection (one statement: no transaction
    //! needed; the upsert is atomic).
    use tokio_postgres::GenericClient;

    use super::*;

    /// A row as a job; a column of an unexpected type is an error, not a panic.
    fn row(r: &tokio_postgres::Row) -> Result<StoredCall, StoreError> {
        Ok(call_from_row(
            r.try_get(0)?,
            i64::from(r.try_get::<_, i32>(1)?),
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
        ))
    }

    pub(crate) async fn save(c: &impl GenericClient, call: &StoredCall) -> Result<(), StoreError> {
        c.execute(
            SQL_CALL_SAVE,
            &[
                &call.id,
                &i32::from(call.open),
                &call.doc,
                &micros(call.created_at),
                &micros(call.updated_at),
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn get(
        c: &impl GenericClient,
        id: &str,
    ) -> Result<Option<StoredCall>, StoreError> {
        c.query_opt(SQL_CALL_GET, &[&id])
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    pub(crate) async fn open(c: &impl GenericClient) -> Result<Vec<StoredCall>, StoreError> {
        c.query(SQL_CALLS_OPEN, &[])
            .await?
            .iter()
            .map(row)
            .collect()
    }

    pub(crate) async fn recent(
        c: &impl GenericClient,
        limit: u32,
    ) -> Result<Vec<StoredCall>, StoreError> {
        c.query(SQL_CALLS_RECENT, &[&recent_limit(limit)])
            .await?
            .iter()
            .map(row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_limit_is_capped() {
        assert_eq!(recent_limit(0), 0);
        assert_eq!(recent_limit(20), 20);
        assert_eq!(recent_limit(u32::MAX), 1000);
    }
}
