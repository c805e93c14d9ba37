//! A cross-process gate: a Postgres advisory lock that serialises the steps of the trading pipeline with
//! the operator's halt, so that a halt lands either before a candle's decisions or after all of them, never
//! between an approval and its submission.

use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use crate::{EventStore, StoreError};

/// Advisory lock key of the trading gate (`jarvis-gate` in ASCII).
const GATE: i64 = 0x6a61_7276_6973_6761;

/// The gate, held until [`Gate::open`]. Dropping it without opening closes its connection instead of
/// returning it to the pool, which releases the lock too.
pub struct Gate {
    conn: Option<PoolConnection<Postgres>>,
}

impl EventStore {
    /// Waits for the trading gate and holds it.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn close_gate(&self) -> Result<Gate, StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(GATE)
            .execute(&mut *conn)
            .await?;
        Ok(Gate { conn: Some(conn) })
    }
}

impl Gate {
    /// Releases the gate.
    ///
    /// # Errors
    /// [`StoreError::Database`]; the connection is then closed, which releases the lock too.
    pub async fn open(mut self) -> Result<(), StoreError> {
        if let Some(mut conn) = self.conn.take() {
            if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(GATE)
                .execute(&mut *conn)
                .await
            {
                let _ = conn.close().await;
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // Dropped without `open` (an error or a panic on the way): never return a connection that still
        // holds the lock to the pool.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
