//! `harness`: runs AIMA's operator scenarios (features/*.feature) against a real Docker
//! engine and reports each success criterion; `image build` packages the stub engine image.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harness::ledger;
use harness::scenarios::{RunOptions, catalog};
use harness::stub_image::{self, STUB_IMAGE};

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Executable operator scenarios for AIMA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the scenarios, their criteria and tags.
    List,
    /// List every step phrase a feature may use, by subject, each with an example.
    Steps,
    /// Remove what interrupted harness runs left behind (daemons, homes, containers).
    Clean,
    /// Run a feature (scenario-NN, gateway) or all of them, print each criterion's verdict with
    /// its evidence, and write report.md and junit.xml.
    Run(RunArgs),
    /// Build the engine images: the stub (aima-stub-engine:latest) and real engines.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Write tiny real models (random weights, real formats and tokenizers).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure what AIMA adds on top of raw Docker (start, stop, errors, API, memory).
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Fewer cycles and shorter load (a few minutes in all).
    #[arg(long)]
    quick: bool,
    /// The aima binary to measure [default: aima next to this executable].
    #[arg(long, value_name = "PATH")]
    aima: Option<PathBuf>,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Only the real-engine rows (llama.cpp and vLLM on the CPU, images built first).
    #[arg(long)]
    real_engines: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A feature: scenario-NN or a capability such as gateway; or all.
    scenario: String,
    /// The aima binary to test [default: aima next to this executable].
    #[arg(long, value_name = "PATH")]
    aima: Option<PathBuf>,
    /// Image to run as vLLM [default: aima-stub-engine:latest, built when missing].
    #[arg(long, value_name = "IMAGE")]
    engine_image: Option<String>,
    /// Where report.md and junit.xml go.
    #[arg(long, value_name = "DIR", default_value = "harness-reports")]
    report_dir: PathBuf,
    /// Also run @gpu criteria (they fail where no NVIDIA GPU is found).
    #[arg(long)]
    gpu: bool,
    /// Scenarios run side by side.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Only criteria whose tags match, as cucumber writes it: '@gpu', 'not @slow',
    /// '@gateway and not @wip'.
    #[arg(long, value_name = "EXPR", value_parser = parse_tags)]
    tags: Option<cucumber::gherkin::tagexpr::TagOperation>,
    /// Host ports for the scenarios' services, FIRST-LAST, handed out in slices of 10
    /// [default: 24000-31999].
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    port_range: Option<(u16, u16)>,
    /// Keep the home, daemon log and containers of a failing scenario, and print where.
    #[arg(long)]
    keep_on_failure: bool,
    /// Where the .feature files are [default: the repository's features/].
    #[arg(long, value_name = "DIR")]
    features_dir: Option<PathBuf>,
}

fn parse_tags(text: &str) -> Result<cucumber::gherkin::tagexpr::TagOperation, String> {
    text.parse().map_err(|e| {
        format!("'{text}' is not a tag expression ({e}); write e.g. '@gpu' or 'not @slow'")
    })
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let range = text
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| *a >= 1024 && b >= a && b - a + 1 >= 10);
    range.ok_or_else(|| {
        format!(
            "'{text}' is not a port range of at least 10 ports from 1024 up; write e.g. 20000-20999"
        )
    })
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build an engine image unless it is already current: the stub (default) from its
    /// binary; llama.cpp (aima-llamacpp-cpu) and vllm (aima-vllm-cpu, about 7 GB and
    /// 12-15 minutes) from their recipes in harness/engines/.
    Build {
        /// stub, llama.cpp, vllm, or all.
        #[arg(long, value_name = "ENGINE", default_value = "stub")]
        engine: String,
        /// The stub binary to package [default: aima-stub-engine next to this executable].
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Rebuild even when the image is current.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Write the tiny models into DIR (deterministic: the same bytes every run).
    Build {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::List => list(),
        Command::Steps => steps(),
        Command::Clean => clean(),
        Command::Run(args) => run(args),
        Command::Image(ImageCommand::Build {
            engine,
            binary,
            force,
        }) => image_build(&engine, binary, force).map(|()| ExitCode::SUCCESS),
        Command::Model(ModelCommand::Build { out }) => {
            model_build(&out).map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench(args),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}

fn list() -> anyhow::Result<ExitCode> {
    let criteria = catalog::load(&catalog::default_features_dir())?;
    let mut current = String::new();
    for c in &criteria {
        if c.scenario != current {
            current.clone_from(&c.scenario);
            println!("{}  {}", c.scenario, c.feature);
        }
        let tags: Vec<String> = c
            .tags
            .iter()
            .filter(|t| **t != c.scenario)
            .map(|t| format!("@{t}"))
            .collect();
        println!(
            "  {}{}",
            c.name,
            if tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", tags.join(" "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn steps() -> anyhow::Result<ExitCode> {
    let phrases = harness::scenarios::phrases::all(&catalog::default_features_dir())?;
    print!(
        "{}",
        harness::scenarios::phrases::listing(&phrases).trim_start()
    );
    Ok(ExitCode::SUCCESS)
}

fn clean() -> anyhow::Result<ExitCode> {
    let swept = ledger::sweep_interrupted();
    if swept.is_empty() {
        println!("nothing left by interrupted harness runs");
    } else {
        println!("removed {swept}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` until it ends or Ctrl-C / SIGTERM arrives; on a signal, removes what this
/// process started (daemons, homes, containers) and exits as a killed process would.
fn until_interrupted<T>(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T>,
) -> T {
    let signal = runtime.block_on(async {
        tokio::select! {
            done = work => Ok(done),
            signal = interrupted() => Err(signal),
        }
    });
    match signal {
        Ok(done) => done,
        Err((name, code)) => {
            eprintln!("harness: {name}; removing what this run started");
            let swept = ledger::sweep_own();
            eprintln!("harness: removed {swept}");
            std::process::exit(code);
        }
    }
}

/// The signal's name and the exit code a shell gives a process it killed.
async fn interrupted() -> (&'static str, i32) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => ("interrupted (SIGINT)", 130),
        _ = term.recv() => ("terminated (SIGTERM)", 143),
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let features_dir = args
        .features_dir
        .clone()
        .unwrap_or_else(catalog::default_features_dir);
    let selection = match args.scenario.as_str() {
        "all" => None,
        name => {
            let known: std::collections::BTreeSet<String> = catalog::load(&features_dir)?
                .into_iter()
                .map(|c| c.scenario)
                .collect();
            anyhow::ensure!(
                known.contains(name),
                "'{name}' is not a feature; pass one of {} or all (see 'harness list')",
                known.into_iter().collect::<Vec<_>>().join(", ")
            );
            Some(name.to_owned())
        }
    };
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    if args.aima.is_none() {
        harness::build_under_cargo()?;
    }
    let mut options = RunOptions::new(args.report_dir);
    options.selection = selection;
    options.aima = args.aima;
    options.engine_image = args.engine_image;
    options.gpu = args.gpu;
    options.concurrency = args.concurrency;
    options.tags = args.tags;
    options.port_range = args.port_range;
    options.keep_on_failure = args.keep_on_failure;
    options.features_dir = features_dir;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = until_interrupted(&runtime, harness::scenarios::run(options.clone()))?;
    println!("{}", report.table());
    println!(
        "reports: {} and {}",
        options.report_dir.join("report.md").display(),
        options.report_dir.join("junit.xml").display()
    );
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.aima.is_none() {
        harness::build_under_cargo()?;
    }
    let aima = match args.aima {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("aima"))
            .filter(|p| p.is_file())
            .ok_or_else(|| anyhow::anyhow!("no aima binary next to this one; pass --aima PATH"))?,
    };
    let stub_binary = stub_image::locate_stub_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = until_interrupted(&runtime, async {
        let docker = harness::docker::connect().await?;
        let image = stub_image::ensure_stub_image(&docker, &stub_binary)
            .await?
            .tag;
        let options = harness::bench::BenchOptions {
            quick: args.quick,
            aima: aima.clone(),
            stub_binary,
            image,
            real_engines_only: args.real_engines,
        };
        harness::bench::run(options).await
    })?;
    print!("{}", harness::bench::table(&results));
    println!("aima: {}", aima.display());
    if let Some(path) = &args.json {
        harness::bench::write_json(&results, path)?;
        println!("json: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn image_build(engine: &str, binary: Option<PathBuf>, force: bool) -> anyhow::Result<()> {
    let real = match engine {
        "stub" => Vec::new(),
        "all" => harness::engine_images::ALL.to_vec(),
        other => vec![harness::engine_images::by_name(other).ok_or_else(|| {
            anyhow::anyhow!(
                "--engine {other}: not an engine with an image here; give stub, llama.cpp, vllm or all"
            )
        })?],
    };
    if engine == "all" || engine == "stub" {
        stub_image_build(binary, force)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for image in real {
        let built = runtime.block_on(async {
            let docker = harness::docker::connect().await?;
            image.ensure(&docker, force).await
        })?;
        println!(
            "{} {} {} ({:.1} MB, recipe sha256 {})",
            built.tag,
            built.id,
            if built.rebuilt {
                "built"
            } else {
                "already current"
            },
            built.size_bytes as f64 / 1e6,
            &built.recipe_sha256[..12]
        );
    }
    Ok(())
}

fn model_build(out: &std::path::Path) -> anyhow::Result<()> {
    for file in harness::engine_images::build_models(out)? {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        println!("{} ({size} bytes)", file.display());
    }
    Ok(())
}

fn stub_image_build(binary: Option<PathBuf>, force: bool) -> anyhow::Result<()> {
    let binary = match binary {
        Some(path) if !path.is_file() => anyhow::bail!(
            "--binary {}: no such file; build it with `cargo build -p harness --bin aima-stub-engine`",
            path.display()
        ),
        Some(path) => path,
        None => {
            // A fresh clone has not built the stub yet: under cargo, build it now.
            harness::build_under_cargo()?;
            stub_image::locate_stub_binary()?
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let image = runtime.block_on(async {
        let docker = harness::docker::connect().await?;
        stub_image::ensure_image(&docker, &binary, STUB_IMAGE, force).await
    })?;
    let state = if image.rebuilt {
        "built"
    } else {
        "already current"
    };
    println!(
        "{} {} {state} ({:.1} MB, binary {} sha256 {})",
        image.tag,
        image.id,
        image.size_bytes as f64 / 1e6,
        binary.display(),
        image
            .binary_sha256
            .get(..12)
            .unwrap_or(&image.binary_sha256)
    );
    Ok(())
}
