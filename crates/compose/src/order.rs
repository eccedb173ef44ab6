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

    // Kahn's algorithm, always taking the alphabetically first ready
    // service; dependents and counts make it O(n log n), not O(n^2), as
    // tenants can send thousands of services.
    let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ready = BTreeSet::new();
    for service in by_name.values() {
        waiting.insert(service.name.clone(), service.depends_on.len());
        if service.depends_on.is_empty() {
            ready.insert(service.name.clone());
        }
        for dep in &service.depends_on {
            dependents
                .entry(dep.clone())
                .or_default()
                .push(service.name.clone());
        }
    }
    let mut ordered = Vec::with_capacity(by_name.len());
    while let Some(next) = ready.pop_first() {
        waiting.remove(&next);
        for dependent in dependents.remove(&next).unwrap_or_default() {
            if let Some(count) = waiting.get_mut(&dependent) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    ready.insert(dependent);
                }
            }
        }
        if let Some(service) = by_name.remove(&next) {
            ordered.push(service);
        }
    }
    if !by_name.is_empty() {
        // What is left waits on itself: each one's dependencies still left.
        let remaining: BTreeMap<String, BTreeSet<String>> = by_name
            .values()
            .map(|s| {
                let deps = s.depends_on.iter().filter(|d| by_name.contains_key(*d));
                (s.name.clone(), deps.cloned().collect())
            })
            .collect();
        if let Some(start) = remaining.keys().next() {
            return Err(Error::DependencyCycle(find_cycle(&remaining, start)));
        }
    }
    Ok(ordered)
}

/// Every remaining service still waits on another remaining one, so walking
/// first dependencies must revisit a service: that loop is a cycle.
fn find_cycle(remaining: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Vec<String> {
    let mut walk: Vec<String> = vec![start.to_owned()];
    // Position of each service in `walk` (the walk can be long).
    let mut seen: BTreeMap<String, usize> = BTreeMap::from([(start.to_owned(), 0)]);
    loop {
        let current = walk.last().map(String::as_str).unwrap_or(start);
        let Some(next) = remaining.get(current).and_then(|deps| deps.iter().next()) else {
            return walk;
        };
        if let Some(&pos) = seen.get(next) {
            let mut cycle = walk.split_off(pos);
            cycle.push(next.clone());
            return cycle;
        }
        seen.insert(next.clone(), walk.len());
        walk.push(next.clone());
    }
}
