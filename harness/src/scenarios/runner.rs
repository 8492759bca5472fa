//! Runs selected scenarios with cucumber and turns the outcome into a criterion report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cucumber::event::ScenarioFinished;
use cucumber::{World as _, WriterExt as _, writer};
use futures::FutureExt;

use super::catalog::{self, Criterion, Excluded};
use super::report::{Report, Row, Verdict};
use super::world::{AimaWorld, RunConfig, configure};
use crate::stub_image;

/// How `harness run` (and `cargo test`) runs the scenarios.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `scenario-NN`, or `None` for all.
    pub selection: Option<String>,
    /// The `aima` binary; default: next to this executable.
    pub aima: Option<PathBuf>,
    /// The image run as vLLM; default: the stub image, built when missing.
    pub engine_image: Option<String>,
    /// Where the Markdown report and JUnit XML go.
    pub report_dir: PathBuf,
    /// Run `@gpu` criteria (they fail loudly without a GPU).
    pub gpu: bool,
    pub features_dir: PathBuf,
    /// Scenarios run side by side; each has its own daemon, home and ports.
    pub concurrency: usize,
    /// Only criteria whose tags match (`@gpu`, `not @slow`, `@gateway and not @wip`).
    pub tags: Option<cucumber::gherkin::tagexpr::TagOperation>,
    /// Host ports the scenarios' services take, in slices of 10; default 24000-31999.
    pub port_range: Option<(u16, u16)>,
    /// Keep the home, daemon log and containers of a failing scenario, and say where.
    pub keep_on_failure: bool,
}

impl RunOptions {
    pub fn new(report_dir: PathBuf) -> Self {
        Self {
            selection: None,
            aima: None,
            engine_image: None,
            report_dir,
            gpu: false,
            features_dir: catalog::default_features_dir(),
            concurrency: 2,
            tags: None,
            port_range: None,
            keep_on_failure: false,
        }
    }
}

/// What one scenario's run left for the report.
#[derive(Debug, Clone)]
struct Outcome {
    verdict: Verdict,
    took: Duration,
    evidence: Vec<String>,
    /// The daemon log of a failing scenario, relative to the report dir.
    daemon_log: Option<String>,
}

type Outcomes = Arc<Mutex<BTreeMap<(String, String), Outcome>>>;

/// Runs the selected scenarios and writes `report.md` and `junit.xml` into the report dir.
pub async fn run(options: RunOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let swept = crate::ledger::sweep_interrupted();
    if !swept.is_empty() {
        println!("removed what interrupted harness runs left: {swept}");
    }
    let criteria: Vec<Criterion> = catalog::load(&options.features_dir)?
        .into_iter()
        .filter(|c| options.selection.as_ref().is_none_or(|s| &c.scenario == s))
        .filter(|c| {
            use cucumber::tag::Ext as _;
            options.tags.as_ref().is_none_or(|tags| tags.eval(&c.tags))
        })
        .collect();
    if criteria.is_empty() {
        anyhow::bail!(
            "no criterion of '{}' matches{}; see 'harness list'",
            options.selection.as_deref().unwrap_or("all"),
            if options.tags.is_some() {
                " the tags"
            } else {
                ""
            }
        );
    }

    let aima = match &options.aima {
        Some(path) => path.clone(),
        None => sibling_binary("aima")
            .context("build it with 'cargo build -p aima' or pass --aima PATH")?,
    };
    anyhow::ensure!(
        aima.is_file(),
        "aima binary {} does not exist; pass --aima PATH",
        aima.display()
    );
    let stub_binary = stub_image::locate_stub_binary()?;
    let engine_image = match &options.engine_image {
        Some(image) => image.clone(),
        None => {
            let docker = crate::docker::connect().await?;
            stub_image::ensure_stub_image(&docker, &stub_binary)
                .await?
                .tag
        }
    };
    // Real engines run where their images were built from the current recipes: a
    // criterion tagged with an engine (`@llamacpp`, `@vllm`) needs that engine's image.
    let mut missing_images: Vec<(&'static str, String)> = Vec::new();
    if criteria.iter().any(|c| c.has_tag("real-engine")) {
        let docker = crate::docker::connect().await?;
        for image in crate::engine_images::ALL {
            if image.current(&docker).await?.is_none() {
                missing_images.push((
                    image.feature_tag,
                    format!(
                        "the image {} is not built from its current recipe: run `cargo harness image build --engine {}` ({}; CI does)",
                        image.tag, image.engine, image.build_time
                    ),
                ));
            }
        }
    }
    configure(RunConfig {
        aima,
        stub_binary,
        engine_image,
        ports: options.port_range,
        keep_on_failure: options.keep_on_failure,
    });

    std::fs::create_dir_all(&options.report_dir).with_context(|| {
        format!(
            "cannot create the report dir {}",
            options.report_dir.display()
        )
    })?;
    let to_run: BTreeSet<(String, String)> = criteria
        .iter()
        .filter(|c| c.excluded(options.gpu, &missing_images).is_none())
        .map(|c| (c.feature.clone(), c.name.clone()))
        .collect();
    let outcomes: Outcomes = Arc::default();
    let recorded = Arc::clone(&outcomes);
    let instances: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let seen_instances = Arc::clone(&instances);
    let kept: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let kept_instances = Arc::clone(&kept);
    let report_dir = options.report_dir.clone();
    let keep_on_failure = options.keep_on_failure;
    AimaWorld::cucumber()
        .with_writer(
            writer::Basic::raw(std::io::stdout(), writer::Coloring::Never, 0)
                .summarized()
                .normalized(),
        )
        // Our own CLI owns argv; cucumber gets empty options (so the filter below applies).
        .with_cli(cucumber::cli::Opts::<_, _, _, cucumber::cli::Empty>::default())
        .max_concurrent_scenarios(options.concurrency)
        .after(move |feature, _rule, scenario, finished, world| {
            let verdict = match finished {
                ScenarioFinished::StepPassed => Verdict::Pass,
                ScenarioFinished::StepSkipped => {
                    Verdict::Fail("a step has no definition".to_owned())
                }
                ScenarioFinished::StepFailed(_, _, error) => Verdict::Fail(error.to_string()),
                ScenarioFinished::BeforeHookFailed(_) => {
                    Verdict::Fail("the before hook failed".to_owned())
                }
            };
            let mut outcome = Outcome {
                verdict,
                took: Duration::ZERO,
                evidence: Vec::new(),
                daemon_log: None,
            };
            if let Some(w) = world {
                if let Some(instance) = w.instance.clone() {
                    seen_instances.lock().expect("lock").insert(instance);
                }
                if matches!(outcome.verdict, Verdict::Fail(_)) {
                    let name = log_name(feature, &scenario.name);
                    match write_daemon_log(&report_dir, &name, &w.daemon_log()) {
                        Ok(path) => outcome.daemon_log = Some(path),
                        Err(e) => w.note(format!("the daemon log could not be written: {e:#}")),
                    }
                    if keep_on_failure {
                        let kept_where = w.keep();
                        println!("{}: {kept_where}", scenario.name);
                        w.note(kept_where);
                        if let Some(instance) = w.instance.clone() {
                            kept_instances.lock().expect("lock").insert(instance);
                        }
                    }
                }
                outcome.took = w.started.elapsed();
                outcome.evidence = std::mem::take(&mut w.evidence);
            }
            recorded
                .lock()
                .expect("lock")
                .insert((feature.name.clone(), scenario.name.clone()), outcome);
            async {}.boxed_local()
        })
        .filter_run(
            options.features_dir.clone(),
            move |feature, _rule, scenario| {
                to_run.contains(&(feature.name.clone(), scenario.name.clone()))
            },
        )
        .await;

    let outcomes = outcomes.lock().expect("lock");
    let mut rows = criteria
        .iter()
        .map(|c| {
            let without_run = |verdict| Row {
                scenario: c.scenario.clone(),
                criterion: c.name.clone(),
                verdict,
                took: None,
                evidence: Vec::new(),
                daemon_log: None,
            };
            match c.excluded(options.gpu, &missing_images) {
                Some(Excluded::Pending(reason)) => without_run(Verdict::Pending(reason)),
                Some(Excluded::NeedsImage(why)) => without_run(Verdict::Skipped(why)),
                Some(Excluded::NeedsGpu) => without_run(Verdict::Skipped(
                    "needs a real NVIDIA GPU: run with --features gpu (cargo test) or --gpu (harness run) on a GPU runner".to_owned(),
                )),
                None => match outcomes.get(&(c.feature.clone(), c.name.clone())) {
                    Some(o) => Row {
                        verdict: o.verdict.clone(),
                        took: Some(o.took),
                        evidence: o.evidence.clone(),
                        daemon_log: o.daemon_log.clone(),
                        ..without_run(Verdict::Pass)
                    },
                    None => without_run(Verdict::Fail("did not run".to_owned())),
                },
            }
        })
        .collect::<Vec<_>>();
    rows.push(leftover_check(
        &instances.lock().expect("lock"),
        &kept.lock().expect("lock"),
    ));
    let report = Report {
        rows,
        took: started.elapsed(),
    };
    let title = format!(
        "AIMA scenarios: {}",
        options.selection.as_deref().unwrap_or("all")
    );
    report.write_markdown(&options.report_dir.join("report.md"), &title)?;
    report.write_junit(&options.report_dir.join("junit.xml"), &title)?;
    crate::ledger::close();
    Ok(report)
}

/// `scenario-20-3`: the feature's name and the criterion's number, for file names.
fn log_name(feature: &cucumber::gherkin::Feature, criterion: &str) -> String {
    let tag = feature
        .tags
        .first()
        .map_or("feature", |t| t.trim_start_matches('@'));
    let number = criterion.split('.').next().unwrap_or(criterion);
    format!("{tag}-{number}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes a failing scenario's daemon log under `logs/` of the report dir; returns its
/// path relative to the report dir, as report.md links it.
fn write_daemon_log(report_dir: &Path, name: &str, lines: &[String]) -> anyhow::Result<String> {
    let relative = format!("logs/{name}.log");
    let path = report_dir.join(&relative);
    std::fs::create_dir_all(report_dir.join("logs"))?;
    std::fs::write(&path, lines.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(relative)
}

/// The end-of-run check: no `aima.managed` container of any instance this run created
/// is left (each world removes what it made, even after a failed step), except those
/// `--keep-on-failure` kept on purpose.
fn leftover_check(instances: &BTreeSet<String>, kept: &BTreeSet<String>) -> Row {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=aima.managed",
            "--format",
            "{{.Names}} {{.Label \"aima.instance\"}}",
        ])
        .output();
    let verdict_and_evidence = match out {
        Ok(out) if out.status.success() => {
            let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|i| instances.contains(i) && !kept.contains(i))
                })
                .map(str::to_owned)
                .collect();
            let evidence = vec![format!(
                "{} AIMA instances ran; aima.managed containers of theirs left: {}{}",
                instances.len(),
                left.len(),
                if kept.is_empty() {
                    String::new()
                } else {
                    format!(" (not counting {} kept by --keep-on-failure)", kept.len())
                }
            )];
            if left.is_empty() {
                (Verdict::Pass, evidence)
            } else {
                (
                    Verdict::Fail(format!("containers left behind: {}", left.join(", "))),
                    evidence,
                )
            }
        }
        Ok(out) => (
            Verdict::Fail(format!(
                "docker ps failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Vec::new(),
        ),
        Err(e) => (
            Verdict::Fail(format!("cannot run docker ps: {e}")),
            Vec::new(),
        ),
    };
    let (verdict, evidence) = verdict_and_evidence;
    Row {
        scenario: "run".to_owned(),
        criterion: "No aima.managed container of this run is left".to_owned(),
        verdict,
        took: None,
        evidence,
        daemon_log: None,
    }
}

/// A workspace binary next to this executable, or one directory up (from `deps/`).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the current executable")?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("no {name} binary next to {}", exe.display()))
}

/// Where reports go when none is given.
pub fn default_report_dir(base: &Path) -> PathBuf {
    base.join("harness-reports")
}
