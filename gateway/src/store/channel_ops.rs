//! Store operations of the message channels (WeChat, SMS), beside the core order operations.
//!
//! - [`Addition`]: a photo or a location a citizen sends right after a report belongs to that
//!   report, so it is added to the order (document and history) rather than becoming an order of
//!   its own. Adding the same thing twice (a retried delivery) changes nothing.
//! - [`SmsPart`]: carriers split long SMS into parts that the providers post one by one, in any
//!   order. Each part is stored durably before it is acknowledged (an acknowledged part must
//!   survive a crash), and the operation answers whether the message is now complete. The
//!   channel then creates the order (idempotently) and marks the parts done; parts that wait
//!   too long are collected by [`Store::sms_stale_groups`](super::Store::sms_stale_groups).
//!
//! Both back ends share the SQL text here; SQLite runs it on the writer thread, PostgreSQL in a
//! pooled transaction (serialized per sender by an advisory lock, so two parts arriving at once
//! on two nodes cannot both see the message incomplete).

use adapters::WorkOrder;
use adapters::work_order::{Attachment, Location};
use chrono::{DateTime, Utc};

use super::{StoreError, from_micros, micros};

/// Something a citizen adds to an order after it was created.
#[derive(Debug, Clone, PartialEq)]
pub enum Addition {
    Attachment(Attachment),
    /// Coordinates (and the place's name as `address`, when given).
    Location(Location),
    /// A line in the order's history (a missed call's callback: reached, or not after N tries).
    Note(String),
}

/// Most attachments one order collects through additions.
pub const MAX_ADDED_ATTACHMENTS: usize = 20;

/// Add to the order; `false` when it was already there (nothing to write).
pub(crate) fn apply_addition(
    order: &mut WorkOrder,
    addition: &Addition,
    by: &str,
    at: DateTime<Utc>,
) -> bool {
    let note = match addition {
        Addition::Attachment(a) => {
            if order.attachments.iter().any(|x| x.url == a.url)
                || order.attachments.len() >= MAX_ADDED_ATTACHMENTS
            {
                return false;
            }
            order.attachments.push(a.clone());
            "市民补充了图片"
        }
        Addition::Location(l) => {
            let same = order.location.lat == l.lat
                && order.location.lng == l.lng
                && (l.address.is_none() || order.location.address == l.address);
            if same {
                return false;
            }
            order.location.lat = l.lat;
            order.location.lng = l.lng;
            if l.address.is_some() {
                order.location.address = l.address.clone();
            }
            "市民补充了位置"
        }
        Addition::Note(text) => {
            let status = order.status;
            order.push_status(status, at, Some(text.clone()), by);
            return true;
        }
    };
    let status = order.status;
    order.push_status(status, at, Some(note.to_owned()), by);
    true
}

/// One stored part of a long SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsPart {
    /// `aliyun`, `tencent`.
    pub provider: String,
    /// The message's stable id (a redelivered part repeats it).
    pub part_id: String,
    pub phone: String,
    /// 1-based.
    pub index: u16,
    pub total: u16,
    /// The part's text, marker included.
    pub text: String,
    pub received_at: DateTime<Utc>,
}

/// Where a long message stands after storing one of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsPartState {
    Waiting {
        have: u16,
        total: u16,
    },
    /// Every part is there: one per index, in index order.
    Complete(Vec<SmsPart>),
    /// This part was already used for an order (a late redelivery).
    Done,
}

pub(crate) const SQL_PART_SEEN: &str =
    "SELECT done FROM sms_parts WHERE provider = $1 AND part_id = $2";
pub(crate) const SQL_PART_INSERT: &str = "INSERT INTO sms_parts \
    (provider, part_id, phone, total, idx, text, received_at, done) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, 0)";
pub(crate) const SQL_PART_GROUP: &str = "SELECT provider, part_id, phone, total, idx, text, received_at \
    FROM sms_parts WHERE done = 0 AND provider = $1 AND phone = $2 AND total = $3 \
    ORDER BY received_at, part_id";
pub(crate) const SQL_PART_DONE: &str =
    "UPDATE sms_parts SET done = 1 WHERE provider = $1 AND part_id = $2";
pub(crate) const SQL_PART_PURGE: &str = "DELETE FROM sms_parts WHERE done = 1 AND received_at < $1";
pub(crate) const SQL_PART_OPEN: &str = "SELECT provider, part_id, phone, total, idx, text, received_at \
    FROM sms_parts WHERE done = 0 ORDER BY provider, phone, total, received_at, part_id";

/// How long used parts are kept to recognize late redeliveries.
pub(crate) const KEEP_DONE_S: i64 = 2 * 24 * 3600;

/// Decide the state of a sender's open parts (oldest first).
pub(crate) fn group_state(open: Vec<SmsPart>, total: u16) -> SmsPartState {
    let mut by_index: Vec<Option<SmsPart>> = vec![None; usize::from(total)];
    for p in open {
        if let Some(slot) = by_index.get_mut(usize::from(p.index).saturating_sub(1))
            && slot.is_none()
        {
            *slot = Some(p);
        }
    }
    let have = by_index.iter().filter(|s| s.is_some()).count() as u16;
    if have == total {
        SmsPartState::Complete(by_index.into_iter().flatten().collect())
    } else {
        SmsPartState::Waiting { have, total }
    }
}

/// Group open parts by sender and keep the groups whose first part is older than `older_than`.
pub(crate) fn stale_groups(open: Vec<SmsPart>, older_than: DateTime<Utc>) -> Vec<Vec<SmsPart>> {
    let mut groups: Vec<Vec<SmsPart>> = Vec::new();
    for p in open {
        match groups.last_mut() {
            Some(g)
                if g[0].provider == p.provider
                    && g[0].phone == p.phone
                    && g[0].total == p.total =>
            {
                g.push(p)
            }
            _ => groups.push(vec![p]),
        }
    }
    groups.retain(|g| g.iter().map(|p| p.received_at).min() < Some(older_than));
    groups
}

/// `$n` placeholders are PostgreSQL's; SQLite reads `?n` the same way.
pub(crate) fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

pub(crate) fn part_from_row(
    provider: String,
    part_id: String,
    phone: String,
    total: i64,
    idx: i64,
    text: String,
    received_at: i64,
) -> SmsPart {
    SmsPart {
        provider,
        part_id,
        phone,
        total: u16::try_from(total).unwrap_or(0),
        index: u16::try_from(idx).unwrap_or(0),
        text,
        received_at: from_micros(received_at),
    }
}

pub(crate) mod sqlite {
    //! The SQLite side, run on the writer thread (writes) or a reader (reads).
    use adapters::work_order::Channel;
    use adapters::{OrderNumber, WorkOrder};
    use chrono::{DateTime, Utc};
    use rusqlite::{Connection, OptionalExtension, Transaction, params};

    use super::*;

    pub(crate) fn attach(
        tx: &Transaction<'_>,
        id: &OrderNumber,
        addition: &Addition,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let doc: Option<String> = tx
            .prepare_cached("SELECT doc FROM orders WHERE id = ?1")?
            .query_row([id.as_str()], |r| r.get(0))
            .optional()?;
        let Some(doc) = doc else { return Ok(None) };
        let mut order: WorkOrder = serde_json::from_str(&doc)?;
        if apply_addition(&mut order, addition, by, at) {
            tx.prepare_cached("UPDATE orders SET status = ?2, doc = ?3 WHERE id = ?1")?
                .execute(params![
                    order.id.as_str(),
                    order.status.as_str(),
                    serde_json::to_string(&order)?
                ])?;
        }
        Ok(Some(order))
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SmsPart> {
        Ok(part_from_row(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    }

    pub(crate) fn sms_part(tx: &Transaction<'_>, p: &SmsPart) -> Result<SmsPartState, StoreError> {
        let seen: Option<i64> = tx
            .prepare_cached(&sqlite_sql(SQL_PART_SEEN))?
            .query_row(params![p.provider, p.part_id], |r| r.get(0))
            .optional()?;
        match seen {
            Some(1) => return Ok(SmsPartState::Done),
            Some(_) => {}
            None => {
                tx.prepare_cached(&sqlite_sql(SQL_PART_INSERT))?
                    .execute(params![
                        p.provider,
                        p.part_id,
                        p.phone,
                        p.total,
                        p.index,
                        p.text,
                        micros(p.received_at)
                    ])?;
            }
        }
        let open = tx
            .prepare_cached(&sqlite_sql(SQL_PART_GROUP))?
            .query_map(params![p.provider, p.phone, p.total], row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(group_state(open, p.total))
    }

    pub(crate) fn sms_done(
        tx: &Transaction<'_>,
        provider: &str,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut stmt = tx.prepare_cached(&sqlite_sql(SQL_PART_DONE))?;
        for id in ids {
            stmt.execute(params![provider, id])?;
        }
        tx.prepare_cached(&sqlite_sql(SQL_PART_PURGE))?
            .execute(params![micros(now) - KEEP_DONE_S * 1_000_000])?;
        Ok(())
    }

    pub(crate) fn open_parts(c: &Connection) -> Result<Vec<SmsPart>, StoreError> {
        Ok(c.prepare_cached(&sqlite_sql(SQL_PART_OPEN))?
            .query_map([], row)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn latest_order_of(
        c: &Connection,
        channel: Channel,
        user: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let doc: Option<String> = c
            .prepare_cached(
                "SELECT doc FROM orders WHERE received_at >= ?1 \
                 AND json_extract(doc, '$.channel') = ?2 \
                 AND json_extract(doc, '$.citizen.channel_user') = ?3 \
                 ORDER BY received_at DESC, id DESC LIMIT 1",
            )?
            .query_row(params![micros(since), channel.as_str(), user], |r| r.get(0))
            .optional()?;
        Ok(match doc {
            Some(d) => Some(serde_json::from_str(&d)?),
            None => None,
        })
    }
}

pub(crate) mod postgres {
    //! The PostgreSQL side, each operation in its own pooled transaction.
    use adapters::work_order::Channel;
    use adapters::{OrderNumber, WorkOrder};
    use chrono::{DateTime, Utc};
    use tokio_postgres::GenericClient;

    use super::*;

    fn row(r: &tokio_postgres::Row) -> SmsPart {
        part_from_row(
            r.get(0),
            r.get(1),
            r.get(2),
            i64::from(r.get::<_, i32>(3)),
            i64::from(r.get::<_, i32>(4)),
            r.get(5),
            r.get(6),
        )
    }

    /// Locks an order's row, lets `change` edit the document and writes it back when `change`
    /// says it changed; `None` when there is no such order. Every read-modify-write of an order
    /// (status events, additions, delivery) goes through here inside the caller's transaction.
    pub(crate) async fn update_order(
        tx: &tokio_postgres::Transaction<'_>,
        id: &OrderNumber,
        change: impl FnOnce(&mut WorkOrder) -> bool,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let Some(row) = tx
            .query_opt(
                "SELECT doc FROM orders WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut order: WorkOrder = serde_json::from_str(row.get::<_, &str>(0))?;
        if change(&mut order) {
            tx.execute(
                "UPDATE orders SET status = $2, doc = $3 WHERE id = $1",
                &[
                    &id.as_str(),
                    &order.status.as_str(),
                    &serde_json::to_string(&order)?,
                ],
            )
            .await?;
        }
        Ok(Some(order))
    }

    pub(crate) async fn attach(
        c: &mut deadpool_postgres::Object,
        id: &OrderNumber,
        addition: &Addition,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let tx = c.transaction().await?;
        let order = update_order(&tx, id, |o| apply_addition(o, addition, by, at)).await?;
        tx.commit().await?;
        Ok(order)
    }

    pub(crate) async fn sms_part(
        c: &mut deadpool_postgres::Object,
        p: &SmsPart,
    ) -> Result<SmsPartState, StoreError> {
        let tx = c.transaction().await?;
        let lock_key = format!("sms:{}:{}", p.provider, p.phone);
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
            .await?;
        let seen = tx
            .query_opt(SQL_PART_SEEN, &[&p.provider, &p.part_id])
            .await?
            .map(|r| r.get::<_, i32>(0));
        match seen {
            Some(1) => return Ok(SmsPartState::Done),
            Some(_) => {}
            None => {
                tx.execute(
                    SQL_PART_INSERT,
                    &[
                        &p.provider,
                        &p.part_id,
                        &p.phone,
                        &i32::from(p.total),
                        &i32::from(p.index),
                        &p.text,
                        &micros(p.received_at),
                    ],
                )
                .await?;
            }
        }
        let open = tx
            .query(
                SQL_PART_GROUP,
                &[&p.provider, &p.phone, &i32::from(p.total)],
            )
            .await?
            .iter()
            .map(row)
            .collect();
        tx.commit().await?;
        Ok(group_state(open, p.total))
    }

    pub(crate) async fn sms_done(
        c: &mut deadpool_postgres::Object,
        provider: &str,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = c.transaction().await?;
        for id in ids {
            tx.execute(SQL_PART_DONE, &[&provider, id]).await?;
        }
        tx.execute(SQL_PART_PURGE, &[&(micros(now) - KEEP_DONE_S * 1_000_000)])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn open_parts(c: &impl GenericClient) -> Result<Vec<SmsPart>, StoreError> {
        Ok(c.query(SQL_PART_OPEN, &[]).await?.iter().map(row).collect())
    }

    pub(crate) async fn latest_order_of(
        c: &impl GenericClient,
        channel: Channel,
        user: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<WorkOrder>, StoreError> {
        let row = c
            .query_opt(
                "SELECT doc FROM orders WHERE received_at >= $1 \
                 AND doc::jsonb ->> 'channel' = $2 \
                 AND doc::jsonb #>> '{citizen,channel_user}' = $3 \
                 ORDER BY received_at DESC, id DESC LIMIT 1",
                &[&micros(since), &channel.as_str(), &user],
            )
            .await?;
        Ok(match row {
            Some(r) => Some(serde_json::from_str(r.get::<_, &str>(0))?),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: &str, index: u16, total: u16, at: i64) -> SmsPart {
        SmsPart {
            provider: "aliyun".into(),
            part_id: id.into(),
            phone: "13800138000".into(),
            index,
            total,
            text: format!("({index}/{total})x"),
            received_at: from_micros(at),
        }
    }

    #[test]
    fn a_group_completes_with_one_part_per_index() {
        assert_eq!(
            group_state(vec![part("a", 3, 3, 1), part("b", 1, 3, 2)], 3),
            SmsPartState::Waiting { have: 2, total: 3 }
        );
        let SmsPartState::Complete(parts) = group_state(
            vec![
                part("a", 3, 3, 1),
                part("b", 1, 3, 2),
                part("c", 1, 3, 3),
                part("d", 2, 3, 4),
            ],
            3,
        ) else {
            panic!("complete");
        };
        let ids: Vec<&str> = parts.iter().map(|p| p.part_id.as_str()).collect();
        assert_eq!(ids, ["b", "d", "a"]);
    }

    #[test]
    fn stale_groups_by_sender() {
        let g = stale_groups(
            vec![
                part("a", 1, 3, 1),
                part("b", 2, 3, 50),
                part("c", 1, 2, 100),
            ],
            from_micros(60),
        );
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].len(), 2);
    }
}
