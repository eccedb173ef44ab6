//! `logs` (StreamLogs) and `events` (GetServiceEvents).

use std::collections::HashMap;

use ferry_proto::ferry::v1 as pb;
use tokio_stream::StreamExt as _;
use tonic::Code;

use crate::cli::{EventsArgs, LogsArgs};
use crate::error::{CliError, Result};
use crate::session::Session;

/// `30s`, `10m`, `2h`, `1d` (or plain seconds) → seconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = digits.parse().map_err(|_| {
        CliError::usage(format!("`{text}` is not a duration like 30s, 10m, 2h, 1d"))
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(CliError::usage(format!(
                "`{text}` is not a duration like 30s, 10m, 2h, 1d"
            )));
        }
    };
    Ok(n * scale)
}

/// What the errors of the cluster-reading RPCs (`rpc`, reading `what`) mean.
fn cluster_error(what: &'static str, rpc: &'static str) -> impl Fn(tonic::Status) -> CliError {
    move |status| match status.code() {
        Code::Unimplemented => CliError::msg(format!(
            "this ferry-api cannot show {what} yet ({rpc} is not implemented by the server)"
        ))
        .hint("upgrade ferry-api"),
        Code::FailedPrecondition => {
            CliError::msg(format!("{what} are not available: {}", status.message()))
                .hint("they come from the cluster; a ferry-api without one only plans deployments")
        }
        _ => status.into(),
    }
}

const POD_COLOURS: [&str; 6] = ["36", "35", "32", "33", "34", "31"];

/// `ferry logs`.
pub async fn logs(s: &mut Session, args: LogsArgs) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(args.service.as_deref()).await?;
    let since_seconds = args
        .since
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .unwrap_or(0);
    let logs_error = cluster_error("logs", "StreamLogs");
    let mut stream = api
        .services()
        .stream_logs(api.req(pb::StreamLogsRequest {
            service_id,
            follow: args.follow,
            since_seconds,
            tail_lines: args.tail.unwrap_or(0),
            previous: args.previous,
            pod: args.pod.unwrap_or_default(),
            container: args.container.unwrap_or_default(),
        }))
        .await
        .map_err(&logs_error)?
        .into_inner();
    let mut colours: HashMap<String, &str> = HashMap::new();
    while let Some(line) = stream.next().await {
        let line = line.map_err(&logs_error)?;
        if s.out.structured() {
            let mut value = crate::output::to_json(&line)?;
            if let Some(map) = value.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            crate::output::write_out(&format!("{value}\n"))?;
            continue;
        }
        let next = POD_COLOURS[colours.len() % POD_COLOURS.len()];
        let colour = *colours.entry(line.pod.clone()).or_insert(next);
        let prefix = s.out.paint(colour, &line.pod);
        crate::output::write_out(&format!("{prefix} | {}\n", line.line))?;
    }
    if colours.is_empty() && !s.out.structured() {
        // Silence would look like a hang or a bug: say why nothing came.
        eprintln!(
            "no log lines: the service has no pod with a started container{}",
            if args.follow {
                ""
            } else {
                " (add -f to wait for one)"
            }
        );
    }
    Ok(())
}

/// `ferry events`.
pub async fn events(s: &mut Session, args: EventsArgs) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(args.service.as_deref()).await?;
    let events = api
        .services()
        .get_service_events(api.req(pb::GetServiceEventsRequest {
            service_id,
            limit: args.limit,
        }))
        .await
        .map_err(cluster_error("events", "GetServiceEvents"))?
        .into_inner()
        .events;
    s.out.list(&events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap_or_default(), 600);
        assert_eq!(parse_duration("45").unwrap_or_default(), 45);
        assert_eq!(parse_duration("1d").unwrap_or_default(), 86_400);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5w").is_err());
    }
}
