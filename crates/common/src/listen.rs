//! PostgreSQL `LISTEN` for the services that wake on another process's
//! commit (route feed, credential cache, notification delivery).

/// A PostgreSQL `LISTEN channel` connection, retried with backoff (250 ms
/// doubling to 10 s) until it is up; `None` once `shutdown` fires. `what`
/// names the listener in the log.
pub async fn listen(
    db: &ferry_db::sea_orm::DatabaseConnection,
    channel: &str,
    shutdown: &crate::Shutdown,
    what: &str,
) -> Option<ferry_db::sea_orm::sqlx::postgres::PgListener> {
    use ferry_db::sea_orm::sqlx::postgres::PgListener;
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
            listener.listen(channel).await?;
            Ok::<_, ferry_db::sea_orm::sqlx::Error>(listener)
        };
        tokio::select! {
            () = shutdown.wait() => return None,
            listener = listening => match listener {
                Ok(listener) => return Some(listener),
                Err(err) => tracing::warn!(error = %err, "{what}: LISTEN failed; retrying"),
            },
        }
        tokio::select! {
            () = shutdown.wait() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
    }
}
