//! `depends_on` resolution: references checked, cycles named, services
//! ordered dependencies first and otherwise by name.

use std::collections::{BTreeMap, BTreeSet};

use crate::{ComposeService, Error, Result};

/// `services` are `(compose name, service)`; their `depends_on` still hold
/// compose names. `skipped` are services left out by `profiles`.
pub(crate) fn resolve(
    services: Vec<(String, ComposeService)>,
    skipped: &BTreeSet<String>,
) -> Result<Vec<ComposeService>> {
    // Compose names and normalised names both resolve (`my_db` or `my-db`).
    let mut names = BTreeMap::new();
    for (compose_name, service) in &services {
        names.insert(compose_name.clone(), service.name.clone());
        names.insert(service.name.clone(), service.name.clone());
    }
    let mut by_name = BTreeMap::new();
    for (compose_name, mut service) in services {
        let mut deps = BTreeSet::new();
        for dep in &service.depends_on {
            match names.get(dep) {
                Some(n) => {
                    deps.insert(n.clone());
                }
                None if skipped.contains(dep) => {
                    return Err(Error::Invalid {
                        path: format!("services.{compose_name}.depends_on"),
                        message: format!(
                            "service `{dep}` is only enabled by a profile, and Ferry does not deploy profiled services"
                        ),
                    });
                }
                None => {
                    return Err(Error::UnknownDependency {
                        service: compose_name,
                        dependency: dep.clone(),
                    });
                }
            }
        }
        service.depends_on = deps.into_iter().collect();
        by_name.insert(service.name.clone(), service);
    }

    let mut remaining: BTreeMap<String, BTreeSet<String>> = by_name
        .values()
        .map(|s| (s.name.clone(), s.depends_on.iter().cloned().collect()))
        .collect();
    let mut ordered = Vec::with_capacity(by_name.len());
    // Kahn's algorithm, always taking the alphabetically first ready service.
    while let Some(next) = remaining
        .iter()
        .find(|(_, deps)| deps.is_empty())
        .map(|(n, _)| n.clone())
    {
        remaining.remove(&next);
        for deps in remaining.values_mut() {
            deps.remove(&next);
        }
        if let Some(service) = by_name.remove(&next) {
            ordered.push(service);
        }
    }
    if let Some(start) = remaining.keys().next() {
        return Err(Error::DependencyCycle(find_cycle(&remaining, start)));
    }
    Ok(ordered)
}

/// Every remaining service still waits on another remaining one, so walking
/// first dependencies must revisit a service: that loop is a cycle.
fn find_cycle(remaining: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Vec<String> {
    let mut walk: Vec<String> = vec![start.to_owned()];
    loop {
        let current = walk.last().map(String::as_str).unwrap_or(start);
        let Some(next) = remaining.get(current).and_then(|deps| deps.iter().next()) else {
            return walk;
        };
        if let Some(pos) = walk.iter().position(|n| n == next) {
            let mut cycle = walk.split_off(pos);
            cycle.push(next.clone());
            return cycle;
        }
        walk.push(next.clone());
    }
}
