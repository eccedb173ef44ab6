//! ACME Renewal Information (RFC 9773): when the CA's directory has
//! `renewalInfo`, each current ACME certificate's suggested renewal window
//! is asked for (no more often than the answer's Retry-After allows) and
//! the order's next attempt moves to a random time inside it (§4.2); a
//! window already past means "renew now". Without ARI the renewal stays
//! where issuance put it (a third of the lifetime left).

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_db::entities::enums::CertificateOrderStatus;
use ferry_db::entities::{certificate_orders, certificates};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, Condition, DatabaseConnection,
    EntityTrait as _, IntoActiveModel as _, QueryFilter as _,
};
use instant_acme::{Account, CertificateIdentifier};
use x509_parser::prelude::{FromDer as _, ParsedExtension, X509Certificate};

use crate::{Error, Result};

/// The shortest and longest wait before asking again, whatever the CA's
/// Retry-After says (RFC 9773 §4.3.2 lets clients clamp it).
const MIN_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(24 * 3600);
/// The wait after a failed ask, or when the CA has no ARI.
const FAILED_RETRY: chrono::Duration = chrono::Duration::hours(1);
const UNSUPPORTED_RETRY: chrono::Duration = chrono::Duration::hours(24);

/// The ARI identifier (`base64url(AKI keyIdentifier).base64url(serial)`)
/// of the leaf of `chain_pem`.
pub fn certificate_id(chain_pem: &str) -> Result<CertificateIdentifier<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, Der};
    let bad = |why: &str| Error::Acme(format!("ARI certificate id: {why}"));
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| bad("no PEM certificate"))?
        .map_err(|_| bad("bad PEM"))?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|_| bad("bad X.509"))?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .ok_or_else(|| bad("no authority key identifier"))?;
    Ok(CertificateIdentifier::new(
        Der::from_slice(aki.0),
        Der::from_slice(cert.tbs_certificate.raw_serial()),
    )
    .into_owned())
}

/// When to renew inside `[start, end]`: a uniformly random moment, or now
/// if that moment has passed.
pub fn pick(start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let span = (end - start).num_seconds().max(0);
    let at = start + chrono::Duration::seconds(rand::random_range(0..=span));
    at.max(now)
}

fn to_chrono(unix: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(unix, 0).ok_or_else(|| Error::Acme("ARI window out of range".into()))
}

/// What one ask produced for an order.
enum Answer {
    Window(DateTime<Utc>, DateTime<Utc>, Duration),
    Unsupported,
}

async fn ask(account: &Account, chain_pem: &str) -> Result<Answer> {
    let id = certificate_id(chain_pem)?;
    match account.renewal_info(&id).await {
        Ok((info, retry)) => Ok(Answer::Window(
            to_chrono(info.suggested_window.start.unix_timestamp())?,
            to_chrono(info.suggested_window.end.unix_timestamp())?,
            retry.clamp(MIN_RETRY, MAX_RETRY),
        )),
        Err(instant_acme::Error::Unsupported(_)) => Ok(Answer::Unsupported),
        Err(err) => Err(Error::Acme(format!("renewal information: {err}"))),
    }
}

/// Orders with a current certificate whose ARI re-check time has come.
async fn due(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
) -> Result<Vec<certificate_orders::Model>> {
    Ok(certificate_orders::Entity::find()
        .filter(certificate_orders::Column::Status.eq(CertificateOrderStatus::Valid))
        .filter(certificate_orders::Column::CertificateId.is_not_null())
        .filter(
            Condition::any()
                .add(certificate_orders::Column::AriNextCheckAt.is_null())
                .add(certificate_orders::Column::AriNextCheckAt.lte(now)),
        )
        .all(db)
        .await?)
}

/// Asks about every due order's certificate and records the answer;
/// returns how many windows were received. `account`: called only when
/// something is due.
pub async fn check<F, Fut>(db: &DatabaseConnection, now: DateTime<Utc>, account: F) -> Result<usize>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Account>>,
{
    let rows = due(db, now).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let account = account().await?;
    let mut windows = 0;
    for row in rows {
        let Some(cert) = certificates::Entity::find_by_id(row.certificate_id.unwrap_or_default())
            .one(db)
            .await?
        else {
            continue;
        };
        let mut update = row.clone().into_active_model();
        match ask(&account, &cert.certificate_pem).await {
            Ok(Answer::Window(start, end, retry)) => {
                windows += 1;
                // A new window gets a new random moment; the same one keeps it.
                if row.ari_window_start != Some(start) || row.ari_window_end != Some(end) {
                    update.next_attempt_at = Set(pick(start, end, now));
                }
                update.ari_window_start = Set(Some(start));
                update.ari_window_end = Set(Some(end));
                update.ari_next_check_at = Set(Some(
                    now + chrono::Duration::from_std(retry).unwrap_or(FAILED_RETRY),
                ));
            }
            Ok(Answer::Unsupported) => {
                update.ari_next_check_at = Set(Some(now + UNSUPPORTED_RETRY));
            }
            Err(err) => {
                tracing::warn!(domain = %row.domain_id, error = %err, "ACME renewal information failed");
                update.ari_next_check_at = Set(Some(now + FAILED_RETRY));
            }
        }
        update.update(db).await?;
    }
    Ok(windows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_moment_is_inside_the_window_or_now() {
        let start = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let end = start + chrono::Duration::hours(6);
        for _ in 0..50 {
            let at = pick(start, end, start - chrono::Duration::days(1));
            assert!(at >= start && at <= end, "{at}");
        }
        let now = end + chrono::Duration::hours(1);
        assert_eq!(pick(start, end, now), now);
    }
}
