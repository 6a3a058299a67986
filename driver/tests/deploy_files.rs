//! The deployment files under `deploy/`, checked against the `quarry` binary they run.
//!
//! Every file there must be non-empty and parse: YAML (every document), TOML, systemd units, and
//! the Markdown pages' fenced `toml` and `yaml` blocks. Every `quarry` command line in them must
//! name a subcommand, and every `--flag` on it must be one that subcommand's `--help` lists (as
//! an option or a visible alias; a flag before the subcommand must be a global one). Every
//! `QUARRY_*` variable a YAML file sets beside a command line must be one its help names. And
//! the driver's port must agree: wherever a file names it (`--driver` and `QUARRY_DRIVER` URLs,
//! `driver_url`, the driver's container ports and probes, a driver Service), it is the port of
//! the `quarry driver --listen` in the same file, or, in a file without one, of some file's.
//!
//! Where command lines are found:
//!
//! ```text
//!   *.yml, *.yaml  any mapping's entrypoint + command + args whose first word is quarry
//!                  (compose services, Kubernetes containers), and compose healthchecks'
//!                  `test: [CMD, quarry, ...]`; the same mapping's `environment` or `env` is
//!                  that command's environment, and its `ports` and probes its ports
//!   *.service      Exec*= lines (ExecStart=) whose program is quarry
//!   *.md           fenced sh blocks: lines that start with `quarry`, and `docker ... exec ...
//!                  quarry ...` or `kubectl ... exec ... -- quarry ...` lines
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// A `quarry` command line found in a deploy file.
#[derive(Debug, Clone, Default)]
struct CommandLine {
    /// Where it is, for messages: the file and the place in it.
    origin: String,
    /// The words after `quarry`.
    args: Vec<String>,
    /// Environment variables set for it (YAML files only), as name and value.
    env: Vec<(String, String)>,
    /// Ports its container or service declares (YAML files only), with where each is named.
    ports: Vec<(u16, String)>,
}

/// What one deploy file holds, and what is wrong with it so far.
#[derive(Debug, Default)]
struct DeployFile {
    /// The path from the repository root, such as `deploy/compose/docker-compose.yml`.
    path: String,
    commands: Vec<CommandLine>,
    /// Driver ports named outside command lines (Services, `driver_url`), with where.
    driver_ports: Vec<(u16, String)>,
    problems: Vec<String>,
}

impl DeployFile {
    /// Records a problem, prefixed with the file's path.
    fn problem(&mut self, message: String) {
        self.problems.push(format!("{}: {message}", self.path));
    }

    /// Records a URL that names the driver, by its port.
    fn driver_url(&mut self, url: &str, what: String) {
        match port_of(url) {
            Some(port) => self
                .driver_ports
                .push((port, format!("{}: {what}", self.path))),
            None => self.problem(format!(
                "{what} names the driver as '{url}' without a port; write it as \
                 http://HOST:PORT"
            )),
        }
    }
}

#[test]
fn deploy_files_parse_and_name_only_flags_quarry_has() {
    let mut cli = Cli::new();
    let files: Vec<DeployFile> = deploy_files()
        .iter()
        .map(PathBuf::as_path)
        .map(read_deploy_file)
        .collect();

    // The extraction must see the command lines these files are known to hold; otherwise a
    // change to it could silently check nothing.
    for (path, at_least) in [
        ("deploy/compose/docker-compose.yml", 5),
        ("deploy/kubernetes/driver.yaml", 1),
        ("deploy/kubernetes/workers-daemonset.yaml", 1),
        ("deploy/systemd/quarry-driver.service", 1),
        ("deploy/systemd/quarry-worker-scylla.service", 1),
        ("deploy/README.md", 3),
    ] {
        let file = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} is missing"));
        assert!(
            file.commands.len() >= at_least,
            "{path}: found {} quarry command lines, expected at least {at_least}: {:#?}",
            file.commands.len(),
            file.commands
        );
    }

    let mut problems: Vec<String> = files.iter().flat_map(|f| f.problems.clone()).collect();
    for file in &files {
        for command in &file.commands {
            problems.extend(command_problems(command, &mut cli));
        }
    }
    problems.extend(driver_port_problems(&files, &cli));
    assert!(
        problems.is_empty(),
        "the deploy files disagree with the quarry binary:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn a_flag_quarry_does_not_have_is_reported_with_its_file_and_name() {
    let mut cli = Cli::new();
    let real = CommandLine {
        origin: "deploy/example.yml at services.worker".into(),
        args: words(
            "--data-dir /var/lib/quarry worker --local-node 10.0.0.3:9042 --listen \
             10.0.0.3:7071 --store=scylla",
        ),
        env: vec![("QUARRY_SCYLLA_NODES".into(), "10.0.0.3:9042".into())],
        ports: Vec::new(),
    };
    assert_eq!(
        command_problems(&real, &mut cli),
        Vec::<String>::new(),
        "real flags, an alias (--local-node) and a global flag after the subcommand pass"
    );

    let mut made_up = real.clone();
    made_up.args.extend(words("--local-nodes 10.0.0.3:9042"));
    made_up
        .env
        .push(("QUARRY_SCYLA_NODES".into(), "10.0.0.3:9042".into()));
    let problems = command_problems(&made_up, &mut cli);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("deploy/example.yml") && problems[0].contains("--local-nodes"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("deploy/example.yml") && problems[1].contains("QUARRY_SCYLA_NODES"),
        "{problems:#?}"
    );

    // A flag of a subcommand, given before it, is not a global flag.
    let misplaced = CommandLine {
        origin: "deploy/example.service".into(),
        args: words("--listen 10.0.0.1:7070 driver"),
        ..CommandLine::default()
    };
    let problems = command_problems(&misplaced, &mut cli);
    assert!(
        problems.len() == 1 && problems[0].contains("--listen"),
        "{problems:#?}"
    );

    let nothing = CommandLine {
        origin: "deploy/example.md".into(),
        args: words("--store scylla"),
        ..CommandLine::default()
    };
    let problems = command_problems(&nothing, &mut cli);
    assert!(
        problems.len() == 1 && problems[0].contains("no subcommand"),
        "{problems:#?}"
    );
}

#[test]
fn a_driver_port_other_than_the_listen_port_is_reported() {
    let cli = Cli::new();
    let mut file = DeployFile {
        path: "deploy/example.yml".into(),
        ..DeployFile::default()
    };
    file.commands.push(CommandLine {
        origin: "deploy/example.yml at services.driver".into(),
        args: words("driver --listen 10.0.0.1:7070"),
        ports: vec![(7070, "container port".into())],
        ..CommandLine::default()
    });
    file.commands.push(CommandLine {
        origin: "deploy/example.yml at services.worker".into(),
        args: words("worker --driver http://10.0.0.1:7071"),
        env: vec![("QUARRY_DRIVER".into(), "http://10.0.0.1:7070".into())],
        ..CommandLine::default()
    });
    let problems = driver_port_problems(&[file], &cli);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("deploy/example.yml") && problems[0].contains("7071"),
        "{problems:#?}"
    );
}

#[test]
fn command_lines_are_found_in_each_kind_of_file() {
    let markdown = concat!(
        "Text.\n",
        "\n",
        "```sh\n",
        "quarry --driver http://h:7070 sql -e \"SELECT 1\"   # a comment\n",
        "  docker compose exec driver quarry \\\n",
        "    workers\n",
        "kubectl exec deploy/quarry-driver -- quarry jobs\n",
        "ls /var/lib/quarry\n",
        "```\n",
        "\n",
        "```toml\n",
        "[tls]\n",
        "ca = \"x\"\n",
        "```\n",
    );
    let file = deploy_file("deploy/x.md", markdown);
    assert!(file.problems.is_empty(), "{:#?}", file.problems);
    let found: Vec<Vec<String>> = file.commands.iter().map(|c| c.args.clone()).collect();
    let expected: [&[&str]; 3] = [
        &["--driver", "http://h:7070", "sql", "-e", "SELECT 1"],
        &["workers"],
        &["jobs"],
    ];
    assert_eq!(found, expected);

    let unit = concat!(
        "[Service]\n",
        "Environment=QUARRY_DRIVER=http://h:7070\n",
        "ExecStart=-/usr/local/bin/quarry --data-dir /d worker \\\n",
        "  --listen ${HOST}:0\n",
    );
    let file = deploy_file("deploy/x.service", unit);
    assert!(file.problems.is_empty(), "{:#?}", file.problems);
    assert_eq!(file.commands.len(), 1);
    assert_eq!(
        file.commands[0].args,
        words("--data-dir /d worker --listen ${HOST}:0")
    );
    assert_eq!(file.driver_ports.len(), 1);

    let compose = concat!(
        "services:\n",
        "  w:\n",
        "    entrypoint: [quarry]\n",
        "    command: [worker, --slots, 2]\n",
        "    environment:\n",
        "      QUARRY_STORE: scylla\n",
        "    healthcheck:\n",
        "      test: [CMD, quarry, workers]\n",
    );
    let file = deploy_file("deploy/x.yml", compose);
    assert!(file.problems.is_empty(), "{:#?}", file.problems);
    assert_eq!(file.commands.len(), 2, "{:#?}", file.commands);
    assert_eq!(file.commands[0].args, words("worker --slots 2"));
    assert_eq!(
        file.commands[0].env,
        [("QUARRY_STORE".to_string(), "scylla".to_string())]
    );
    assert_eq!(file.commands[1].args, words("workers"));

    let broken = deploy_file("deploy/x.yaml", "a: [1, 2\n");
    assert!(
        broken.problems.len() == 1 && broken.problems[0].contains("deploy/x.yaml"),
        "{:#?}",
        broken.problems
    );
    let empty = deploy_file("deploy/x.toml", "  \n");
    assert!(
        empty.problems.len() == 1 && empty.problems[0].contains("empty"),
        "{:#?}",
        empty.problems
    );
}

#[test]
fn shell_words_and_ports_read_as_a_shell_would() {
    assert_eq!(
        shell_words(r#"quarry sql -e "SELECT 'a  b'" --x='y z' a\ b # rest"#).unwrap(),
        ["quarry", "sql", "-e", "SELECT 'a  b'", "--x=y z", "a b"]
    );
    assert!(shell_words("quarry sql -e \"open").is_err());
    assert_eq!(port_of("http://quarry-driver:7070"), Some(7070));
    assert_eq!(port_of("https://10.0.0.1:7070/"), Some(7070));
    assert_eq!(port_of("${QUARRY_LISTEN_HOST}:7070"), Some(7070));
    assert_eq!(port_of("$(POD_IP):7070"), Some(7070));
    assert_eq!(port_of("http://quarry-driver"), None);
}

// ---- The binary's help.

/// The subcommands and `--help` texts of the `quarry` binary under test.
#[derive(Debug)]
struct Cli {
    subcommands: BTreeSet<String>,
    /// `--help` of each subcommand asked for so far; "" is `quarry --help`.
    help: BTreeMap<String, String>,
}

impl Cli {
    fn new() -> Cli {
        let top = run_help(&["--help"]);
        let subcommands = subcommands_of(&top);
        assert!(
            subcommands.contains("driver") && subcommands.contains("worker"),
            "could not read the subcommands from `quarry --help`:\n{top}"
        );
        Cli {
            subcommands,
            help: BTreeMap::from([(String::new(), top)]),
        }
    }

    /// The `--help` text of `quarry SUBCOMMAND` ("" for `quarry` itself).
    fn help(&mut self, subcommand: &str) -> &str {
        self.help
            .entry(subcommand.to_string())
            .or_insert_with(|| run_help(&[subcommand, "--help"]))
            .as_str()
    }

    /// The subcommand of `args` and its position: the first word that names one.
    fn subcommand<'a>(&self, args: &'a [String]) -> Option<(usize, &'a str)> {
        args.iter()
            .take_while(|a| a.as_str() != "--")
            .position(|a| self.subcommands.contains(a.as_str()))
            .map(|i| (i, args[i].as_str()))
    }
}

/// Runs the binary with `args` and returns what it printed, with no `QUARRY_*` variables (or
/// any other) from the test's environment in the way.
fn run_help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(args)
        .env_clear()
        .output()
        .expect("running quarry");
    assert!(
        out.status.success(),
        "quarry {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the help is UTF-8")
}

/// The names in the "Commands:" section of a help text.
fn subcommands_of(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // An entry is indented by two spaces; its wrapped description, further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The long flags a help text defines: those on option lines (indented at most six spaces, as
/// clap writes `  -e, --execute <SQL>` and `      --data-dir <DIR>`) and their visible aliases
/// (`[alias: --local-node]`). Flags merely mentioned in a description do not count.
fn listed_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let text = line.trim_start();
        let indent = line.len() - text.len();
        if indent <= 6 && text.starts_with('-') {
            // The option's syntax ends where two spaces start its description.
            let syntax = text.split("  ").next().unwrap_or(text);
            flags.extend(long_flags_in(syntax));
        }
        if let Some(at) = text.find("[alias") {
            let aliases = &text[at..];
            let aliases = aliases.split(']').next().unwrap_or(aliases);
            flags.extend(long_flags_in(aliases));
        }
    }
    flags
}

/// The `--name` words of `text`, without what follows the name (`<VALUE>`, `=`, `]`, `,`).
fn long_flags_in(text: &str) -> impl Iterator<Item = String> {
    text.split([' ', ',']).filter_map(|word| {
        let name = word.strip_prefix("--")?;
        let name: String = name
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        (!name.is_empty()).then(|| format!("--{name}"))
    })
}

/// Whether `text` names the variable `name` as a whole word (`[env: NAME=]` or in prose).
fn names_variable(text: &str, name: &str) -> bool {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(part_of_name)
            && !text[at + name.len()..]
                .chars()
                .next()
                .is_some_and(part_of_name)
    })
}

// ---- The checks.

/// What is wrong with one command line: no subcommand, a flag its subcommand's help does not
/// list, a subcommand's flag given before the subcommand, or a `QUARRY_*` variable that
/// subcommand does not read. Each message names the file (and place) and the flag or variable.
fn command_problems(command: &CommandLine, cli: &mut Cli) -> Vec<String> {
    let origin = &command.origin;
    let Some((at, subcommand)) = cli.subcommand(&command.args) else {
        let names: Vec<&str> = cli.subcommands.iter().map(String::as_str).collect();
        return vec![format!(
            "{origin}: `quarry {}` names no subcommand; use one of {}",
            command.args.join(" "),
            names.join(", ")
        )];
    };
    let global = listed_flags(cli.help(""));
    let help = cli.help(subcommand).to_string();
    let own = listed_flags(&help);
    let mut problems = Vec::new();
    for (i, word) in command.args.iter().enumerate() {
        if word == "--" {
            break;
        }
        if !word.starts_with("--") {
            continue;
        }
        let flag = word.split('=').next().unwrap_or(word);
        if i < at && !global.contains(flag) {
            problems.push(format!(
                "{origin}: {flag} comes before `{subcommand}` but is not a global flag of \
                 quarry; put it after `{subcommand}`"
            ));
        } else if i > at && !own.contains(flag) {
            problems.push(format!(
                "{origin}: `quarry {subcommand}` has no flag {flag}; `quarry {subcommand} \
                 --help` lists the flags it has"
            ));
        }
    }
    for (name, _) in &command.env {
        if name.starts_with("QUARRY_") && !names_variable(&help, name) {
            problems.push(format!(
                "{origin}: sets {name}, which `quarry {subcommand}` does not read; `quarry \
                 {subcommand} --help` shows the variable ([env: ...]) of each flag"
            ));
        }
    }
    problems
}

/// One file's driver ports: those its drivers listen on, and those it names for the driver, each
/// with where.
type DriverPorts = (BTreeSet<u16>, Vec<(u16, String)>);

/// Where the driver's port disagrees with the port it listens on: in each file, every port
/// named for the driver must be that of the file's `quarry driver --listen`, or, in a file with
/// none, that of some file's.
fn driver_port_problems(files: &[DeployFile], cli: &Cli) -> Vec<String> {
    let mut problems = Vec::new();
    // Per file: the ports its drivers listen on, and the ports it names for the driver (each
    // with where, starting with the file's path).
    let mut per_file: Vec<DriverPorts> = Vec::new();
    for file in files {
        let mut listen = BTreeSet::new();
        let mut named = file.driver_ports.clone();
        for command in &file.commands {
            let origin = &command.origin;
            if let Some((_, "driver")) = cli.subcommand(&command.args) {
                match flag_value(&command.args, "--listen").map(|v| (v, port_of(v))) {
                    Some((_, Some(port))) => {
                        listen.insert(port);
                    }
                    Some((value, None)) => problems.push(format!(
                        "{origin}: `quarry driver --listen {value}` has no port; give HOST:PORT"
                    )),
                    None => problems.push(format!(
                        "{origin}: `quarry driver` without --listen; a deploy file names the \
                         address the driver listens on (--listen HOST:7070)"
                    )),
                }
                named.extend(command.ports.iter().cloned());
            }
            let urls = flag_value(&command.args, "--driver")
                .map(|url| (url, "--driver"))
                .into_iter()
                .chain(
                    command
                        .env
                        .iter()
                        .filter(|(name, _)| name == "QUARRY_DRIVER")
                        .map(|(_, url)| (url.as_str(), "QUARRY_DRIVER")),
                );
            for (url, what) in urls {
                match port_of(url) {
                    Some(port) => named.push((port, format!("{origin}: {what} {url}"))),
                    None => problems.push(format!(
                        "{origin}: {what} names the driver as '{url}' without a port; write it \
                         as http://HOST:PORT"
                    )),
                }
            }
        }
        per_file.push((listen, named));
    }
    let everywhere: BTreeSet<u16> = per_file
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    if everywhere.is_empty() {
        problems.push(
            "no deploy file runs `quarry driver --listen HOST:PORT`, so no driver port can be \
             checked"
                .to_string(),
        );
    }
    for (listen, named) in &per_file {
        let (expected, whose) = if listen.is_empty() {
            (&everywhere, "the deploy files' drivers listen on")
        } else {
            (listen, "its driver listens on")
        };
        for (port, what) in named {
            if !expected.contains(port) {
                problems.push(format!(
                    "{what} names the driver's port as {port}, but {whose} {expected:?}"
                ));
            }
        }
    }
    problems
}

/// The value of `--flag VALUE` or `--flag=VALUE` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, word)| {
        if word == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            word.strip_prefix(flag)
                .and_then(|rest| rest.strip_prefix('='))
        }
    })
}

/// The port of `HOST:PORT` or of a URL (`http://HOST:PORT/...`); `None` when it names none.
fn port_of(address: &str) -> Option<u16> {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port.rsplit_once(':')?.1.parse().ok()
}

// ---- Reading the files.

/// The repository's `deploy/` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every file under `deploy/`, sorted.
fn deploy_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&deploy_dir(), &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "no files under {}",
        deploy_dir().display()
    );
    files
}

/// Reads one file under `deploy/`, named by its path from the repository root.
fn read_deploy_file(path: &Path) -> DeployFile {
    let relative = path
        .strip_prefix(deploy_dir())
        .map(|p| format!("deploy/{}", p.display()))
        .unwrap_or_else(|_| path.display().to_string());
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {relative}: {e}"));
    deploy_file(&relative, &text)
}

/// A deploy file's command lines, driver ports and problems, by its kind (its extension).
fn deploy_file(path: &str, text: &str) -> DeployFile {
    let mut file = DeployFile {
        path: path.to_string(),
        ..DeployFile::default()
    };
    if text.trim().is_empty() {
        file.problem("the file is empty".to_string());
        return file;
    }
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("yml" | "yaml") => {
            if let Err(message) = read_yaml(text, &mut file) {
                file.problem(message);
            }
        }
        Some("toml") => read_toml(text, "the file", &mut file),
        Some("service") => read_unit(text, &mut file),
        Some("md") => read_markdown(text, &mut file),
        // The Dockerfile and its ignore file: only non-empty.
        _ => {}
    }
    file
}

/// A TOML file (or block, `what`): it must parse; a `driver_url` names the driver.
fn read_toml(text: &str, what: &str, file: &mut DeployFile) {
    match toml::from_str::<toml::Table>(text) {
        Ok(table) => {
            if let Some(url) = table.get("driver_url").and_then(|v| v.as_str()) {
                file.driver_url(url, format!("driver_url = \"{url}\""));
            }
        }
        Err(e) => file.problem(format!("{what} is not valid TOML: {e}")),
    }
}

/// Every document of a YAML file (or block); an error names the first that does not parse.
fn read_yaml(text: &str, file: &mut DeployFile) -> Result<(), String> {
    let mut documents = 0;
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| format!("document {} is not valid YAML: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        documents += 1;
        // A Kubernetes object is named by its kind and name; a compose file has neither.
        let kind = value.get("kind").and_then(Value::as_str);
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str);
        let at = match (kind, name) {
            (Some(kind), Some(name)) => format!("{kind} {name}: "),
            _ => String::new(),
        };
        if let (Some("Service"), Some(name)) = (kind, name)
            && name.contains("driver")
        {
            for (port, what) in service_ports(&value) {
                file.driver_ports
                    .push((port, format!("{}: Service {name} {what}", file.path)));
            }
        }
        walk_yaml(&value, &at, file);
    }
    if documents == 0 {
        return Err("holds no YAML document".to_string());
    }
    Ok(())
}

/// The numeric `port` and `targetPort` of a Service's ports.
fn service_ports(service: &Value) -> Vec<(u16, String)> {
    let ports = service
        .get("spec")
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_sequence);
    let mut found = Vec::new();
    for port in ports.into_iter().flatten() {
        for key in ["port", "targetPort"] {
            if let Some(number) = port.get(key).and_then(yaml_port) {
                found.push((number, key.to_string()));
            }
        }
    }
    found
}

/// Visits every mapping under `value` for command lines; `at` is the path to it, for messages.
fn walk_yaml(value: &Value, at: &str, file: &mut DeployFile) {
    match value {
        Value::Mapping(map) => {
            yaml_commands(map, at, file);
            for (key, child) in map {
                let key = key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_string);
                // Keys join with dots, except after a document's "Kind name: ".
                let at = if at.is_empty() || at.ends_with(' ') {
                    format!("{at}{key}")
                } else {
                    format!("{at}.{key}")
                };
                walk_yaml(child, &at, file);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_yaml(item, &format!("{at}[{i}]"), file);
            }
        }
        Value::Tagged(tagged) => walk_yaml(&tagged.value, at, file),
        _ => {}
    }
}

/// The `quarry` command lines of one YAML mapping: its entrypoint + command + args, and a
/// compose healthcheck's `test`.
fn yaml_commands(map: &serde_yaml_ng::Mapping, at: &str, file: &mut DeployFile) {
    let origin = format!("{} at {at}", file.path);
    let mut argv = Vec::new();
    for key in ["entrypoint", "command", "args"] {
        // A mapping under one of these names is something else (compose's `build.args`).
        if let Some(value) = map.get(key)
            && !value.is_mapping()
        {
            match yaml_words(value) {
                Ok(words) => argv.extend(words),
                Err(message) => file.problem(format!("{at}.{key}: {message}")),
            }
        }
    }
    if argv.first().is_some_and(|w| is_quarry(w)) {
        file.commands.push(CommandLine {
            origin: origin.clone(),
            args: argv[1..].to_vec(),
            env: yaml_env(map),
            ports: yaml_ports(map, &origin),
        });
    }
    if let Some(test) = map.get("test")
        && let Ok(test) = yaml_words(test)
    {
        let command = match test.first().map(String::as_str) {
            Some("CMD") => Some(test[1..].to_vec()),
            Some("CMD-SHELL") => test.get(1).and_then(|script| shell_words(script).ok()),
            _ => None,
        };
        if let Some(command) = command
            && command.first().is_some_and(|w| is_quarry(w))
        {
            file.commands.push(CommandLine {
                origin: format!("{origin}.test"),
                args: command[1..].to_vec(),
                ..CommandLine::default()
            });
        }
    }
}

/// A YAML command: a list of words, or a string split as a shell would.
fn yaml_words(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(text) => shell_words(text),
        Value::Sequence(items) => items
            .iter()
            .map(|item| yaml_scalar(item).ok_or_else(|| format!("{item:?} is not a word")))
            .collect(),
        other => Err(format!("{other:?} is neither a string nor a list of words")),
    }
}

/// A string, number or boolean as its text.
fn yaml_scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The environment a mapping sets: compose's `environment` (a map, or `NAME=VALUE` words) or
/// a Kubernetes container's `env` (`name` and `value`; a `valueFrom` has no value here).
fn yaml_env(map: &serde_yaml_ng::Mapping) -> Vec<(String, String)> {
    let mut env = Vec::new();
    match map.get("environment") {
        Some(Value::Mapping(vars)) => {
            for (name, value) in vars {
                if let Some(name) = name.as_str() {
                    env.push((name.to_string(), yaml_scalar(value).unwrap_or_default()));
                }
            }
        }
        Some(Value::Sequence(vars)) => {
            for var in vars.iter().filter_map(Value::as_str) {
                let (name, value) = var.split_once('=').unwrap_or((var, ""));
                env.push((name.to_string(), value.to_string()));
            }
        }
        _ => {}
    }
    for var in map
        .get("env")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        if let Some(name) = var.get("name").and_then(Value::as_str) {
            let value = var.get("value").and_then(yaml_scalar).unwrap_or_default();
            env.push((name.to_string(), value));
        }
    }
    env
}

/// The ports a mapping declares for its command: compose `ports` (`[IP:]HOST:CONTAINER`, the
/// container's side), a container's `ports[].containerPort`, and its probes' ports.
fn yaml_ports(map: &serde_yaml_ng::Mapping, origin: &str) -> Vec<(u16, String)> {
    let mut ports = Vec::new();
    for port in map
        .get("ports")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let number = match port {
            Value::String(text) => {
                let container = text.rsplit(':').next().unwrap_or(text);
                container
                    .split('/')
                    .next()
                    .unwrap_or(container)
                    .parse()
                    .ok()
            }
            Value::Mapping(_) => port
                .get("containerPort")
                .or_else(|| port.get("target"))
                .and_then(yaml_port),
            other => yaml_port(other),
        };
        if let Some(number) = number {
            ports.push((number, format!("{origin}: ports {}", describe(port))));
        }
    }
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        for action in ["tcpSocket", "httpGet", "grpc"] {
            if let Some(number) = map
                .get(probe)
                .and_then(|p| p.get(action))
                .and_then(|a| a.get("port"))
                .and_then(yaml_port)
            {
                ports.push((number, format!("{origin}: {probe}.{action}.port")));
            }
        }
    }
    ports
}

/// A port number (a named port, such as a Service's `targetPort: quarry`, is none).
fn yaml_port(value: &Value) -> Option<u16> {
    value.as_u64().and_then(|n| u16::try_from(n).ok())
}

/// A YAML value as a message shows it.
fn describe(value: &Value) -> String {
    yaml_scalar(value).unwrap_or_else(|| format!("{value:?}"))
}

/// A systemd unit: every line a `[Section]`, a comment or `Key=Value`; a `[Service]` with an
/// `ExecStart=`. Its `Exec*=` lines that run quarry are command lines, and `Environment=`
/// lines may name the driver (`QUARRY_DRIVER=URL`).
fn read_unit(text: &str, file: &mut DeployFile) {
    let mut section = String::new();
    let mut has_exec_start = false;
    for (number, line) in logical_lines(text) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let Some((key, value)) = line
            .split_once('=')
            .filter(|(key, _)| !key.trim().is_empty())
        else {
            file.problem(format!(
                "line {number} is neither a [Section], a comment nor Key=Value: {line}"
            ));
            continue;
        };
        let key = key.trim();
        if key == "ExecStart" && section == "Service" {
            has_exec_start = true;
        }
        // Only command lines and environment assignments are shell-like; a Description may
        // hold an apostrophe.
        if !key.starts_with("Exec") && key != "Environment" {
            continue;
        }
        match shell_words(value) {
            Err(message) => file.problem(format!("line {number}: {message}")),
            Ok(words) if key.starts_with("Exec") => {
                // Exec*= may prefix the program with -, @, :, +, ! or |.
                let program = words
                    .first()
                    .map(|w| w.trim_start_matches(['-', '@', ':', '+', '!', '|']));
                if program.is_some_and(is_quarry) {
                    file.commands.push(CommandLine {
                        origin: format!("{}:{number} ({key}=)", file.path),
                        args: words[1..].to_vec(),
                        ..CommandLine::default()
                    });
                }
            }
            Ok(words) => {
                for word in words {
                    if let Some(url) = word.strip_prefix("QUARRY_DRIVER=") {
                        file.driver_url(url, format!("line {number}: QUARRY_DRIVER={url}"));
                    }
                }
            }
        }
    }
    if !has_exec_start {
        file.problem("has no ExecStart= in a [Service] section".to_string());
    }
}

/// A Markdown page: its fenced blocks must close; `sh` blocks are searched for command lines,
/// `toml` and `yaml` blocks must parse.
fn read_markdown(text: &str, file: &mut DeployFile) {
    let mut fence: Option<(String, usize, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            if let Some((_, _, body)) = &mut fence {
                body.push(line.to_string());
            }
            continue;
        };
        match fence.take() {
            None => fence = Some((info.trim().to_string(), i + 1, Vec::new())),
            Some((language, start, body)) => {
                markdown_block(&language, start, &body.join("\n"), file);
            }
        }
    }
    if let Some((_, start, _)) = fence {
        file.problem(format!(
            "the ``` block opened on line {start} is never closed"
        ));
    }
}

/// One fenced block of a Markdown page, opened on line `start`.
fn markdown_block(language: &str, start: usize, body: &str, file: &mut DeployFile) {
    match language {
        "sh" | "bash" | "shell" => {
            for (number, text) in logical_lines(body) {
                let line = start + number;
                let text = text.trim();
                let text = text.strip_prefix("$ ").unwrap_or(text);
                match shell_words(text) {
                    Ok(words) => {
                        if let Some(args) = quarry_in_shell(&words) {
                            file.commands.push(CommandLine {
                                origin: format!("{}:{line}", file.path),
                                args: args.to_vec(),
                                ..CommandLine::default()
                            });
                        }
                    }
                    Err(message) => file.problem(format!("line {line}: {message}")),
                }
            }
        }
        "toml" => read_toml(body, &format!("the toml block after line {start}"), file),
        "yaml" | "yml" => {
            if let Err(message) = read_yaml(body, file) {
                file.problem(format!("the yaml block after line {start}: {message}"));
            }
        }
        _ => {}
    }
}

/// The words after `quarry` in a shell line that runs it: directly, or through `docker ...
/// exec ...` or `kubectl ... exec ...`.
fn quarry_in_shell(words: &[String]) -> Option<&[String]> {
    let first = words.first()?;
    if is_quarry(first) {
        return Some(&words[1..]);
    }
    if first == "docker" || first == "kubectl" {
        let exec = words.iter().position(|w| w == "exec")?;
        let at = exec + words[exec..].iter().position(|w| is_quarry(w))?;
        return Some(&words[at + 1..]);
    }
    None
}

/// Whether a word is the quarry program (`quarry`, `/usr/local/bin/quarry`), not a path that
/// merely ends in quarry (`/var/lib/quarry`).
fn is_quarry(word: &str) -> bool {
    word == "quarry" || word.ends_with("/bin/quarry")
}

/// The lines of `text` with backslash-newline continuations joined, each with the (1-based)
/// number of the line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (number, mut joined) = current.take().unwrap_or((i + 1, String::new()));
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                current = Some((number, joined));
            }
            None => {
                joined.push_str(line);
                lines.push((number, joined));
            }
        }
    }
    lines.extend(current);
    lines
}

/// Splits a line into words as a shell would, closely enough for command lines: whitespace
/// separates words, '...' and "..." group, a backslash escapes the next character (outside
/// single quotes), and a word that starts with `#` begins a comment.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in: {line}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.extend(chars.next()),
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in: {line}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Whitespace-separated words, for the tests' command lines.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}
