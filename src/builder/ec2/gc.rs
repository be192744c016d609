//! `imgbuild gc`: deletes what dead builds left in EC2, found by the
//! `imgbuild:build-id` tag every resource carries from its creation call.
//!
//! A resource is reaped when its build is known dead on this machine (its
//! lock is free: killed, crashed), or when its `imgbuild:expires-at` has
//! passed, or when it is older than `--older-than`. Never reaped: resources
//! of a build still running here, finished AMIs and their snapshots
//! (`imgbuild:status=complete`), and AMIs kept after a wait timeout
//! (`imgbuild:status=kept`).

use std::collections::BTreeSet;

use imgbuild_aws::ec2::{self as api, Ec2, TaggedResource};

use crate::build::liveness::{self, Liveness};
use crate::error::chain;
use crate::report::BuildReporter;

/// What `imgbuild gc` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Regions to clean; empty: the AWS chain's region.
    pub regions: Vec<String>,
    /// Also reap resources created longer ago than this, whatever their expiry tag says.
    pub older_than: Option<std::time::Duration>,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// An EC2-compatible endpoint.
    pub endpoint_url: Option<String>,
}

/// Why a resource is reaped or spared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Reap(&'static str),
    Spare(&'static str),
}

/// The decision for one resource at `now`.
pub fn judge(
    r: &TaggedResource,
    liveness: Liveness,
    now: jiff::Timestamp,
    older_than: Option<std::time::Duration>,
) -> Verdict {
    if r.is_protected() {
        return Verdict::Spare("finished or kept AMI");
    }
    match liveness {
        Liveness::Running => return Verdict::Spare("build still running"),
        Liveness::Dead => return Verdict::Reap("build no longer running"),
        Liveness::Unknown => {}
    }
    let parse = |key| r.tag(key).and_then(|t| t.parse::<jiff::Timestamp>().ok());
    if parse(api::TAG_EXPIRES_AT).is_some_and(|t| t <= now) {
        return Verdict::Reap("expired");
    }
    if let (Some(age), Some(created)) = (older_than, parse(api::TAG_CREATED_AT))
        && jiff::SignedDuration::try_from(age).is_ok_and(|age| created + age <= now)
    {
        return Verdict::Reap("older than --older-than");
    }
    Verdict::Spare("not expired")
}

/// Sweeps every region, reporting each decision and deletion. `Err`: no
/// EC2 connection at all; `Ok(false)`: some region or deletion failed
/// (reported).
pub async fn run(args: &GcOptions, report: &BuildReporter) -> Result<bool, api::Ec2Error> {
    let home = Ec2::connect(args.regions.first().map(String::as_str), args.endpoint_url.as_deref()).await?;
    let regions = if args.regions.is_empty() { vec![home.region().to_string()] } else { args.regions.clone() };
    let now = jiff::Timestamp::now();
    let mut failed = false;
    let mut dead_builds = BTreeSet::new();
    for region in &regions {
        let api = home.in_region(region);
        match gc_region(&api, args, report, now, &mut dead_builds).await {
            Ok(ok) => failed |= !ok,
            Err(e) => {
                report.error(format!("{region}: {}", chain(&e)));
                failed = true;
            }
        }
    }
    if !args.dry_run && !failed {
        dead_builds.iter().for_each(|id| liveness::forget(id));
    }
    Ok(!failed)
}

/// `Ok(false)` when some deletion failed.
async fn gc_region(
    api: &Ec2,
    args: &GcOptions,
    report: &BuildReporter,
    now: jiff::Timestamp,
    dead_builds: &mut BTreeSet<String>,
) -> Result<bool, api::Ec2Error> {
    let tagged = api.tagged(None).await?;
    let mut doomed = Vec::new();
    for r in tagged.resources {
        let state = liveness::liveness(r.build_id());
        let verdict = judge(&r, state, now, args.older_than);
        let line = |what: &str, why: &str| {
            format!("{what} {} {} in {} (build {}): {why}", r.kind.as_str(), r.id, api.region(), r.build_id())
        };
        match verdict {
            Verdict::Spare(why) => report.info(line("keeping", why)),
            Verdict::Reap(why) => {
                if state == Liveness::Dead {
                    dead_builds.insert(r.build_id().to_string());
                }
                report.info(line(if args.dry_run { "would delete" } else { "deleting" }, why));
                doomed.push(r);
            }
        }
    }
    if args.dry_run || doomed.is_empty() {
        return Ok(true);
    }
    let mut ok = true;
    for outcome in api.sweep(&doomed, std::time::Duration::from_secs(900)).await {
        let r = &outcome.resource;
        match outcome.error {
            None => report.info(format!("deleted {} {} in {}", r.kind.as_str(), r.id, api.region())),
            Some(e) => {
                ok = false;
                report.warn(format!(
                    "could not delete {} {} in {}: {}",
                    r.kind.as_str(),
                    r.id,
                    api.region(),
                    chain(&e)
                ));
            }
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use imgbuild_aws::ec2::ResourceKind;

    fn resource(tags: &[(&str, &str)]) -> TaggedResource {
        let mut map: BTreeMap<String, String> = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        map.insert(api::TAG_BUILD_ID.into(), "b-1".into());
        TaggedResource { kind: ResourceKind::Instance, id: "i-1".into(), tags: map }
    }

    #[test]
    fn verdicts() {
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let fresh =
            resource(&[(api::TAG_CREATED_AT, "2026-11-27T11:30:00Z"), (api::TAG_EXPIRES_AT, "2026-11-27T20:00:00Z")]);
        assert_eq!(judge(&fresh, Liveness::Unknown, now, None), Verdict::Spare("not expired"));
        assert_eq!(judge(&fresh, Liveness::Dead, now, None), Verdict::Reap("build no longer running"));
        assert_eq!(judge(&fresh, Liveness::Running, now, Some(Duration::ZERO)), Verdict::Spare("build still running"));
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(judge(&fresh, Liveness::Unknown, now, hour), Verdict::Spare("not expired"));
        let twenty = Some(Duration::from_secs(20 * 60));
        assert_eq!(judge(&fresh, Liveness::Unknown, now, twenty), Verdict::Reap("older than --older-than"));
        let expired = resource(&[(api::TAG_EXPIRES_AT, "2026-11-27T11:59:59Z")]);
        assert_eq!(judge(&expired, Liveness::Unknown, now, None), Verdict::Reap("expired"));
        let done = resource(&[(api::TAG_STATUS, api::STATUS_COMPLETE), (api::TAG_EXPIRES_AT, "2000-01-01T00:00:00Z")]);
        assert_eq!(judge(&done, Liveness::Dead, now, None), Verdict::Spare("finished or kept AMI"));
    }
}
