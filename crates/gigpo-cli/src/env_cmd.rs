//! `gigpo env`: play, inspect and serve environments.
//!
//! - `gigpo env play ENV [--seed N | --level FILE]`: a person plays in the terminal. With a
//!   terminal, single key presses: arrow keys or w/a/s/d move, `r` restarts the level, `n` starts
//!   the next seed, `q` or Esc quits. Without one (input from a pipe), one move per line: `up`,
//!   `down`, `left`, `right` or `u`, `d`, `l`, `r`; `q` quits.
//! - `gigpo env play ENV ... --actions up,left,... [--json]`: plays the listed moves (also
//!   `u/d/l/r`; each is sent as `<action>MOVE</action>`, or verbatim with `--raw`) and, with
//!   `--json`, prints one JSON object per step as docs/formats.md defines:
//!   `{"observation": "…", "reward": …, "terminated": …, "truncated": …, "won": …,
//!   "action_valid": …}`.
//! - `gigpo env show ENV [--seed N | --level FILE]`: prints the level and the length of its
//!   shortest solution (Sokoban: breadth-first solver; FrozenLake: shortest path).
//! - `gigpo env serve ...`: see `serve_cmd`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gigpo_env::frozenlake::FrozenLake;
use gigpo_env::sokoban::{solve, Sokoban};
use gigpo_env::spec::EnvSpec;
use gigpo_env::{Environment, StepOutcome};
use serde::{Deserialize, Serialize};

/// `gigpo env` arguments.
#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    #[command(subcommand)]
    pub command: EnvCommand,
}

/// The `gigpo env` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum EnvCommand {
    /// Play an environment in the terminal, or a scripted episode with --actions.
    Play(PlayArgs),
    /// Print a level and the length of its shortest solution.
    Show(ShowArgs),
    /// Serve a built-in environment as an OpenEnv server.
    Serve(crate::serve_cmd::ServeArgs),
}

/// Which environment and which level.
#[derive(clap::Args, Debug)]
pub struct LevelArgs {
    /// Environment: `sokoban` or `frozenlake` (or, with --config, the `kind` its `[env]` table
    /// names).
    pub env: String,
    /// Level seed (default 0).
    #[arg(long, conflicts_with = "level")]
    pub seed: Option<u64>,
    /// Level file: the observation grid, one row a line.
    #[arg(long)]
    pub level: Option<PathBuf>,
    /// TOML file whose `[env]` table configures the environment (room size, boxes, step
    /// limit, map, ...); its `kind` must be ENV.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `gigpo env play` arguments.
#[derive(clap::Args, Debug)]
pub struct PlayArgs {
    #[command(flatten)]
    pub level: LevelArgs,
    /// Play these moves instead of reading the keyboard, e.g. `up,left,left` (also u/d/l/r).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub actions: Option<Vec<String>>,
    /// With --actions: print one JSON object per step.
    #[arg(long, requires = "actions")]
    pub json: bool,
    /// With --actions: send each item verbatim as the model's output instead of wrapping it in
    /// `<action>…</action>`.
    #[arg(long, requires = "actions")]
    pub raw: bool,
}

/// `gigpo env show` arguments.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub level: LevelArgs,
}

/// Runs `gigpo env`.
pub fn run(args: EnvArgs) -> anyhow::Result<()> {
    match args.command {
        EnvCommand::Play(args) => play(args),
        EnvCommand::Show(args) => show(args),
        EnvCommand::Serve(args) => crate::serve_cmd::run(args),
    }
}

/// The `[env]` table of a configuration file.
#[derive(Deserialize)]
struct ConfigDoc {
    env: EnvSpec,
}

/// The environment spec the arguments describe.
fn spec_of(args: &LevelArgs) -> anyhow::Result<EnvSpec> {
    let mut spec = match &args.config {
        Some(path) => read_config(path, &args.env)?,
        None => args.env.parse()?,
    };
    if let Some(level) = &args.level {
        match &mut spec {
            EnvSpec::Sokoban(c) => c.level = Some(level.clone()),
            EnvSpec::FrozenLake(c) => c.level = Some(level.clone()),
            other => bail!("{} has no level files", other.name()),
        }
    }
    Ok(spec)
}

/// The `[env]` table of a configuration file, which must configure the environment `name`.
fn read_config(path: &Path, name: &str) -> anyhow::Result<EnvSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let doc: ConfigDoc =
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
    let plain = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
    if plain(doc.env.name()) != plain(name) {
        bail!(
            "config file {} configures `{}`, not `{name}`",
            path.display(),
            doc.env.name()
        );
    }
    Ok(doc.env)
}

/// One move typed as a word or a letter: up/down/left/right or u/d/l/r, any case.
fn move_word(item: &str) -> Option<&'static str> {
    match item.trim().to_ascii_lowercase().as_str() {
        "up" | "u" => Some("up"),
        "down" | "d" => Some("down"),
        "left" | "l" => Some("left"),
        "right" | "r" => Some("right"),
        _ => None,
    }
}

/// The model output a scripted item stands for.
fn action_text(item: &str, raw: bool) -> String {
    if raw {
        return item.to_string();
    }
    let word = move_word(item).unwrap_or(item.trim());
    format!("<action>{word}</action>")
}

/// One step of `gigpo env play --json` (docs/formats.md).
#[derive(Serialize)]
struct JsonStep<'a> {
    observation: &'a str,
    reward: f64,
    terminated: bool,
    truncated: bool,
    won: bool,
    action_valid: bool,
}

impl<'a> From<&'a StepOutcome> for JsonStep<'a> {
    fn from(s: &'a StepOutcome) -> Self {
        Self {
            observation: &s.observation.text,
            reward: s.reward,
            terminated: s.terminated,
            truncated: s.truncated,
            won: s.won,
            action_valid: s.action_valid,
        }
    }
}

fn play(args: PlayArgs) -> anyhow::Result<()> {
    let spec = spec_of(&args.level)?;
    let mut env = spec.build()?;
    let seed = args.level.seed.unwrap_or(0);
    match &args.actions {
        Some(actions) => play_scripted(env.as_mut(), seed, actions, &args),
        None if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() => {
            keys::play(env.as_mut(), seed)
        }
        None => play_lines(env.as_mut(), seed),
    }
}

fn play_scripted(
    env: &mut dyn Environment,
    seed: u64,
    actions: &[String],
    args: &PlayArgs,
) -> anyhow::Result<()> {
    let first = env.reset(seed)?;
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "{}\n", first.text)?;
    }
    let mut tally = Tally::default();
    for (i, item) in actions.iter().enumerate() {
        let step = env.step(&action_text(item, args.raw))?;
        tally.add(&step);
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&JsonStep::from(&step))?)?;
        } else {
            writeln!(
                out,
                "{}\n{}\n",
                tally.line(item, &step),
                step.observation.text
            )?;
        }
        if step.done() {
            if i + 1 < actions.len() {
                eprintln!(
                    "the episode ended after step {}; {} actions not played",
                    i + 1,
                    actions.len() - i - 1
                );
            }
            break;
        }
    }
    if !args.json {
        writeln!(out, "{}", tally.summary())?;
    }
    Ok(())
}

/// Running totals of an episode shown to a person.
#[derive(Default)]
struct Tally {
    steps: u32,
    total: f64,
    last: Option<(bool, bool)>,
}

impl Tally {
    fn add(&mut self, s: &StepOutcome) {
        self.steps += 1;
        self.total += s.reward;
        self.last = Some((s.won, s.done()));
    }

    fn line(&self, action: &str, s: &StepOutcome) -> String {
        let valid = if s.action_valid {
            ""
        } else {
            " (invalid action)"
        };
        format!(
            "step {}: {action}{valid}  reward {}  return {}",
            self.steps,
            round(s.reward),
            round(self.total)
        )
    }

    fn summary(&self) -> String {
        let how = match self.last {
            Some((true, _)) => "won",
            Some((false, true)) => "over, not won",
            _ => "not finished",
        };
        format!(
            "{how} after {} steps, return {}",
            self.steps,
            round(self.total)
        )
    }
}

/// A reward for people: sums like 0.1 + 0.2 without the last-digit noise.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Line input: one move per line, from a pipe or a terminal without key events.
fn play_lines(env: &mut dyn Environment, seed: u64) -> anyhow::Result<()> {
    println!("{}\n", env.reset(seed)?.text);
    println!("moves: up, down, left, right (or u, d, l, r); q quits");
    let mut tally = Tally::default();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading standard input")?;
        let typed = line.trim();
        if typed.is_empty() {
            continue;
        }
        if matches!(typed, "q" | "quit" | "exit") {
            break;
        }
        let Some(word) = move_word(typed) else {
            println!("unknown move `{typed}`: up, down, left, right (or u, d, l, r); q quits");
            continue;
        };
        let step = env.step(&format!("<action>{word}</action>"))?;
        tally.add(&step);
        println!("{}\n{}\n", tally.line(word, &step), step.observation.text);
        if step.done() {
            break;
        }
    }
    println!("{}", tally.summary());
    Ok(())
}

/// Key-press play in a terminal (raw mode).
mod keys {
    use std::io::Write;

    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use crossterm::{cursor, execute, terminal};
    use gigpo_env::Environment;

    use super::Tally;

    /// Leaves raw mode however the game ends.
    struct RawMode;

    impl RawMode {
        fn enter() -> anyhow::Result<Self> {
            terminal::enable_raw_mode()?;
            Ok(Self)
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            let _ = terminal::disable_raw_mode();
        }
    }

    enum Key {
        Move(&'static str),
        Restart,
        Next,
        Quit,
        Other,
    }

    fn read_key() -> anyhow::Result<Key> {
        loop {
            let Event::Key(k) = event::read()? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            return Ok(match k.code {
                KeyCode::Up | KeyCode::Char('w') => Key::Move("up"),
                KeyCode::Down | KeyCode::Char('s') => Key::Move("down"),
                KeyCode::Left | KeyCode::Char('a') => Key::Move("left"),
                KeyCode::Right | KeyCode::Char('d') => Key::Move("right"),
                KeyCode::Char('r') => Key::Restart,
                KeyCode::Char('n') => Key::Next,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                _ => Key::Other,
            });
        }
    }

    fn draw(lines: &[String]) -> anyhow::Result<()> {
        let mut out = std::io::stdout();
        execute!(
            out,
            terminal::Clear(terminal::ClearType::All),
            cursor::MoveTo(0, 0)
        )?;
        // Raw mode does not turn "\n" into a carriage return and a line feed.
        write!(out, "{}\r\n", lines.join("\r\n").replace('\n', "\r\n"))?;
        out.flush()?;
        Ok(())
    }

    const HELP: &str = "arrows or w/a/s/d move · r restart · n next seed · q quit";

    pub(super) fn play(env: &mut dyn Environment, mut seed: u64) -> anyhow::Result<()> {
        let _raw = RawMode::enter()?;
        loop {
            let first = env.reset(seed)?;
            let mut tally = Tally::default();
            let mut status = format!("{} · seed {seed}", env.name());
            draw(&[
                status.clone(),
                String::new(),
                first.text,
                String::new(),
                HELP.into(),
            ])?;
            let mut over = false;
            loop {
                match read_key()? {
                    Key::Quit => return Ok(()),
                    Key::Restart => break,
                    Key::Next => {
                        seed += 1;
                        break;
                    }
                    Key::Move(word) if !over => {
                        let step = env.step(&format!("<action>{word}</action>"))?;
                        tally.add(&step);
                        over = step.done();
                        if over {
                            status = tally.summary();
                        }
                        draw(&[
                            tally.line(word, &step),
                            status.clone(),
                            String::new(),
                            step.observation.text,
                            String::new(),
                            HELP.into(),
                        ])?;
                    }
                    _ => {}
                }
            }
        }
    }
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let spec = spec_of(&args.level)?;
    let seed = args.level.seed.unwrap_or(0);
    match &spec {
        EnvSpec::Sokoban(config) => {
            let env = Sokoban::new(config.clone())?;
            let room = env.initial_room(seed)?;
            println!("{room}\n");
            println!("boxes: {}", room.num_boxes());
            println!("step limit: {}", config.max_steps);
            match solve(&room)? {
                Some(steps) => {
                    let words: Vec<&str> = steps.iter().map(|d| d.as_str()).collect();
                    println!("optimal solution: {} steps", steps.len());
                    println!("solution: {}", words.join(","));
                }
                None => println!("optimal solution: none (the level cannot be solved)"),
            }
        }
        EnvSpec::FrozenLake(config) => {
            let mut env = FrozenLake::new(config.clone())?;
            let first = env.reset(seed)?;
            println!("{}\n", first.text);
            println!("step limit: {}", config.max_steps);
            let lake = env.lake().expect("reset made the map");
            match lake.shortest_path() {
                Some(n) => println!("shortest path: {n} steps"),
                None => println!("shortest path: none (no path avoids the holes)"),
            }
        }
        other => bail!("`gigpo env show` cannot show {}", other.name()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_words_and_letters() {
        assert_eq!(move_word("U"), Some("up"));
        assert_eq!(move_word(" right "), Some("right"));
        assert_eq!(move_word("d"), Some("down"));
        assert_eq!(move_word("jump"), None);
        assert_eq!(action_text("l", false), "<action>left</action>");
        assert_eq!(action_text("jump", false), "<action>jump</action>");
        assert_eq!(action_text("left", true), "left");
    }

    #[test]
    fn tally_reports_the_return() {
        let mut t = Tally::default();
        let mut s = StepOutcome {
            observation: gigpo_env::Observation {
                text: String::new(),
                anchor: String::new(),
                admissible_actions: None,
            },
            reward: -0.1,
            terminated: false,
            truncated: false,
            won: false,
            action_valid: true,
        };
        t.add(&s);
        s.reward = 10.9;
        s.terminated = true;
        s.won = true;
        t.add(&s);
        assert_eq!(t.summary(), "won after 2 steps, return 10.8");
    }
}
