//! `sh`: a small POSIX-ish shell. [`parse`] turns text into an AST; [`Shell`] walks it,
//! running builtins, functions and applets (Rust functions in this same instance, see
//! the crate docs for why pipelines are buffered stage by stage).

mod arith;
pub mod glob;
mod parse;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Cursor, Read, Write};
use std::rc::Rc;

use crate::applets;
use crate::ctx::{self, Ctx};
use parse::{AndOr, CmdKind, Command, List, ParamOp, ParseError, Part, Pipeline, Redir, RedirOp, Word};

/// Most bytes one pipeline stage or command substitution may buffer.
pub const STAGE_LIMIT: usize = 64 << 20;
/// Most nested function calls, `eval`s, `.`s and subshells.
const MAX_NESTING: usize = 50;

pub type In<'a> = Rc<RefCell<dyn Read + 'a>>;
pub type Out<'a> = Rc<RefCell<dyn Write + 'a>>;

/// A command's standard streams: shared handles, so `2>&1` makes two slots one stream.
#[derive(Clone)]
pub struct Fds<'a> {
    pub stdin: In<'a>,
    pub out: Out<'a>,
    pub err: Out<'a>,
}

/// A `Read` over a shared stdin slot (borrowed per call).
pub struct ReadFd<'r, 'a>(pub &'r In<'a>);

impl Read for ReadFd<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// A `Write` over a shared output slot (borrowed per call).
pub struct WriteFd<'r, 'a>(pub &'r Out<'a>);

impl Write for WriteFd<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// An in-memory pipe: a stage's whole output, refused past [`STAGE_LIMIT`].
#[derive(Default)]
pub struct StageBuf {
    pub data: Vec<u8>,
    pub overflowed: bool,
}

impl Write for StageBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.data.len() + buf.len() > STAGE_LIMIT {
            self.overflowed = true;
            return Err(io::Error::other("pipe buffer full"));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Non-local control flow: set by `exit`/`return`/`break`/`continue`, consumed by the
/// construct it targets.
#[derive(Clone, Copy, Debug)]
enum Flow {
    Exit(i32),
    Return(i32),
    Break(u32),
    Continue(u32),
}

/// The interpreter's state (a subshell is a clone of it).
#[derive(Clone)]
pub struct Shell {
    vars: HashMap<String, String>,
    exported: HashSet<String>,
    cwd: String,
    arg0: String,
    positional: Vec<String>,
    status: i32,
    flow: Option<Flow>,
    functions: HashMap<String, Rc<Command>>,
    errexit: bool,
    xtrace: bool,
    /// >0 while running a condition (`if`, `while`, `!`, left of `&&`): `set -e` is off.
    cond: usize,
    nesting: usize,
    /// The status of the last command substitution of the current simple command.
    subst_status: Option<i32>,
    /// The address of the top-level stdout when it is a terminal (`ls` prints columns).
    tty_out: Option<usize>,
}

const BUILTINS: &[&str] = &[
    ":", ".", "source", "cd", "export", "unset", "exit", "set", "shift", "read", "return", "break", "continue", "eval",
    "exec", "local", "readonly", "type", "command", "wait", "trap", "umask", "ulimit", "alias", "hash",
];

/// The `sh` applet: `sh [-ex] [-c STRING [ARG0 ARGS…] | SCRIPT [ARGS…]]`, else commands
/// from stdin, line by line (with a prompt when stdin is a terminal or `-i` is given).
pub fn main(
    ctx: &mut Ctx,
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let mut command = None;
    let mut interactive = false;
    let mut flags = Vec::new();
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        match arg.as_str() {
            "-c" => {
                let Some(text) = args.get(i + 1) else {
                    let _ = writeln!(stderr, "sh: -c requires an argument");
                    return 2;
                };
                command = Some(text.clone());
                i += 2;
                break;
            }
            "--help" => {
                let _ = writeln!(stdout, "Usage: sh [-eix] [-c 'SCRIPT' [ARG0 [ARGS]] | FILE [ARGS] | -s [ARGS]]");
                return 0;
            }
            "-s" => {
                i += 1;
                break;
            }
            "--" => {
                i += 1;
                break;
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                for c in flag[1..].chars() {
                    match c {
                        'i' => interactive = true,
                        'c' => {
                            let Some(text) = args.get(i + 1) else {
                                let _ = writeln!(stderr, "sh: -c requires an argument");
                                return 2;
                            };
                            command = Some(text.clone());
                            i += 1;
                        }
                        other => flags.push(other),
                    }
                }
                i += 1;
                if command.is_some() {
                    break;
                }
            }
            _ => break,
        }
    }
    let mut shell = Shell::new(ctx, "sh", Vec::new());
    shell.errexit = flags.contains(&'e');
    shell.xtrace = flags.contains(&'x');
    let rest = &args[i.min(args.len())..];
    let fds = Fds {
        stdin: Rc::new(RefCell::new(stdin)),
        out: Rc::new(RefCell::new(stdout)),
        err: Rc::new(RefCell::new(stderr)),
    };
    if let Some(text) = command {
        if let Some((arg0, params)) = rest.split_first() {
            shell.arg0 = arg0.clone();
            shell.positional = params.to_vec();
        }
        return shell.run_text(&text, &fds);
    }
    if let Some((script, params)) = rest.split_first() {
        shell.arg0 = script.clone();
        shell.positional = params.to_vec();
        let text = match std::fs::read(ctx.resolve(script)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                let _ = writeln!(fds.err.borrow_mut(), "sh: can't open '{script}': {}", ctx::err_msg(&e));
                return if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 };
            }
        };
        return shell.run_text(&text, &fds);
    }
    shell.positional = rest.to_vec();
    let prompt = interactive || ctx::stdin_is_terminal();
    if ctx.tty {
        shell.tty_out = Some(Rc::as_ptr(&fds.out).cast::<u8>() as usize);
    }
    shell.interactive(&fds, prompt)
}

/// Reads one line (through `\n`, kept) from `input`, a byte at a time so nothing past
/// the line is consumed; `None` at end of input.
fn read_line(input: &In<'_>) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match input.borrow_mut().read(&mut byte) {
            Ok(0) => return (!line.is_empty()).then_some(line),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' || line.len() >= 1 << 20 {
                    return Some(line);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (!line.is_empty()).then_some(line),
        }
    }
}

impl Shell {
    /// A shell whose variables are `ctx`'s environment (all exported).
    pub fn new(ctx: &Ctx, arg0: &str, positional: Vec<String>) -> Shell {
        let mut vars: HashMap<String, String> = ctx.env.clone().into_iter().collect();
        vars.insert("PWD".into(), ctx.cwd.clone());
        let exported = vars.keys().cloned().collect();
        vars.entry("IFS".into()).or_insert_with(|| " \t\n".into());
        Shell {
            vars,
            exported,
            cwd: ctx.cwd.clone(),
            arg0: arg0.to_owned(),
            positional,
            status: 0,
            flow: None,
            functions: HashMap::new(),
            errexit: false,
            xtrace: false,
            cond: 0,
            nesting: ctx.depth,
            subst_status: None,
            tty_out: None,
        }
    }

    fn subshell(&self) -> Shell {
        let mut sub = self.clone();
        sub.flow = None;
        sub.nesting += 1;
        sub
    }

    /// Parses and runs a whole text (`-c`, a script, `eval`, `.`).
    fn run_text(&mut self, text: &str, fds: &Fds<'_>) -> i32 {
        match parse::parse(text) {
            Ok(program) => {
                for list in &program {
                    self.run_list(list, fds);
                    if self.flow.is_some() {
                        break;
                    }
                }
                if let Some(Flow::Exit(code)) = self.flow {
                    self.status = code;
                }
                self.status
            }
            Err(error) => {
                let message = match error {
                    ParseError::Incomplete => "syntax error: unexpected end of file".to_owned(),
                    ParseError::Syntax(message) => message,
                };
                let _ = writeln!(fds.err.borrow_mut(), "sh: {message}");
                self.status = 2;
                2
            }
        }
    }

    /// Reads commands from stdin line by line, running each as soon as it is complete.
    fn interactive(&mut self, fds: &Fds<'_>, prompt: bool) -> i32 {
        let mut buffer = String::new();
        loop {
            if prompt {
                let text = if buffer.is_empty() { format!("{} # ", self.prompt_dir()) } else { "> ".to_owned() };
                let mut out = fds.out.borrow_mut();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            let Some(line) = read_line(&fds.stdin) else {
                if !buffer.is_empty() {
                    let _ = writeln!(fds.err.borrow_mut(), "sh: syntax error: unexpected end of file");
                    return 2;
                }
                if prompt {
                    let _ = fds.out.borrow_mut().write_all(b"\n");
                    let _ = fds.out.borrow_mut().flush();
                }
                return self.status;
            };
            buffer.push_str(&String::from_utf8_lossy(&line));
            match parse::parse(&buffer) {
                Ok(program) => {
                    buffer.clear();
                    for list in &program {
                        self.run_list(list, fds);
                        if self.flow.is_some() {
                            break;
                        }
                    }
                    let _ = fds.out.borrow_mut().flush();
                    if let Some(Flow::Exit(code)) = self.flow.take() {
                        return code;
                    }
                }
                Err(ParseError::Incomplete) => {}
                Err(ParseError::Syntax(message)) => {
                    buffer.clear();
                    let _ = writeln!(fds.err.borrow_mut(), "sh: {message}");
                    self.status = 2;
                }
            }
        }
    }

    /// busybox's `\w`: the cwd, with `$HOME` shown as `~`.
    fn prompt_dir(&self) -> String {
        match self.vars.get("HOME").filter(|home| home.len() > 1) {
            Some(home) if self.cwd == *home => "~".to_owned(),
            Some(home) if self.cwd.starts_with(&format!("{home}/")) => format!("~{}", &self.cwd[home.len()..]),
            _ => self.cwd.clone(),
        }
    }

    fn run_list(&mut self, list: &List, fds: &Fds<'_>) -> i32 {
        for and_or in list {
            let checked = self.run_and_or(and_or, fds);
            if self.flow.is_some() {
                break;
            }
            if checked && self.errexit && self.status != 0 && self.cond == 0 {
                self.flow = Some(Flow::Exit(self.status));
                break;
            }
        }
        self.status
    }

    /// Runs `a && b || c`; true when `set -e` applies to the resulting status (the last
    /// pipeline ran and is not negated).
    fn run_and_or(&mut self, and_or: &AndOr, fds: &Fds<'_>) -> bool {
        let n = and_or.rest.len();
        self.cond += usize::from(n > 0);
        let mut status = self.run_pipeline(&and_or.first, fds);
        self.cond -= usize::from(n > 0);
        let mut checked = n == 0 && !and_or.first.bang;
        for (i, (and, pipeline)) in and_or.rest.iter().enumerate() {
            if self.flow.is_some() {
                return false;
            }
            if *and == (status == 0) {
                let last = i + 1 == n;
                self.cond += usize::from(!last);
                status = self.run_pipeline(pipeline, fds);
                self.cond -= usize::from(!last);
                checked = last && !pipeline.bang;
            }
        }
        checked
    }

    fn run_pipeline(&mut self, pipeline: &Pipeline, fds: &Fds<'_>) -> i32 {
        if pipeline.bang {
            self.cond += 1;
        }
        let mut status = if pipeline.cmds.len() == 1 {
            self.run_command(&pipeline.cmds[0], fds)
        } else {
            let mut input: Option<Vec<u8>> = None;
            let mut status = 0;
            for (n, cmd) in pipeline.cmds.iter().enumerate() {
                let last = n + 1 == pipeline.cmds.len();
                let stdin: In<'_> = match input.take() {
                    Some(data) => Rc::new(RefCell::new(Cursor::new(data))),
                    None => fds.stdin.clone(),
                };
                let buffer = Rc::new(RefCell::new(StageBuf::default()));
                let out: Out<'_> = if last { fds.out.clone() } else { buffer.clone() };
                let stage = Fds { stdin, out, err: fds.err.clone() };
                let mut sub = self.subshell();
                status = sub.run_command(cmd, &stage);
                if let Some(Flow::Exit(code)) = sub.flow {
                    status = code;
                }
                drop(stage);
                if !last {
                    let buffer = std::mem::take(&mut *buffer.borrow_mut());
                    if buffer.overflowed {
                        let _ = writeln!(
                            fds.err.borrow_mut(),
                            "sh: pipe: a stage wrote more than {} MiB (pipelines are buffered in memory)",
                            STAGE_LIMIT >> 20
                        );
                    }
                    input = Some(buffer.data);
                }
            }
            status
        };
        if pipeline.bang {
            self.cond -= 1;
            status = i32::from(status == 0);
        }
        self.status = status;
        status
    }

    fn run_command(&mut self, cmd: &Command, fds: &Fds<'_>) -> i32 {
        if self.nesting > MAX_NESTING {
            let _ = writeln!(fds.err.borrow_mut(), "sh: nesting too deep");
            self.status = 2;
            return 2;
        }
        let fds = match self.redirect(&cmd.redirs, fds) {
            Ok(fds) => fds,
            Err(message) => {
                let _ = writeln!(fds.err.borrow_mut(), "sh: {message}");
                self.status = 1;
                return 1;
            }
        };
        let fds = &fds;
        let status = match &cmd.kind {
            CmdKind::Simple { assigns, words } => self.run_simple(assigns, words, fds),
            CmdKind::If { branches, otherwise } => {
                let mut status = 0;
                let mut taken = false;
                for (cond, body) in branches {
                    self.cond += 1;
                    let result = self.run_list(cond, fds);
                    self.cond -= 1;
                    if self.flow.is_some() {
                        return self.status;
                    }
                    if result == 0 {
                        status = self.run_list(body, fds);
                        taken = true;
                        break;
                    }
                }
                if !taken {
                    status = match otherwise {
                        Some(body) => self.run_list(body, fds),
                        None => 0,
                    };
                }
                status
            }
            CmdKind::For { var, items, body } => {
                let items = match items {
                    Some(words) => match self.expand_words(words, fds) {
                        Ok(items) => items,
                        Err(message) => return self.fail(fds, &message),
                    },
                    None => self.positional.clone(),
                };
                let mut status = 0;
                for item in items {
                    self.set_var(var, item);
                    status = self.run_list(body, fds);
                    if self.loop_flow() {
                        break;
                    }
                }
                status
            }
            CmdKind::Loop { cond, body, until } => {
                let mut status = 0;
                loop {
                    self.cond += 1;
                    let result = self.run_list(cond, fds);
                    self.cond -= 1;
                    if self.flow.is_some() {
                        if self.loop_flow() {
                            break;
                        }
                        continue;
                    }
                    if (result == 0) == *until {
                        break;
                    }
                    status = self.run_list(body, fds);
                    if self.loop_flow() {
                        break;
                    }
                }
                status
            }
            CmdKind::Case { word, arms } => {
                let subject = match self.expand_string(word, fds) {
                    Ok(subject) => subject,
                    Err(message) => return self.fail(fds, &message),
                };
                let mut status = 0;
                'arms: for (patterns, body) in arms {
                    for pattern in patterns {
                        let pattern = match self.expand_pattern(pattern, fds) {
                            Ok(pattern) => pattern,
                            Err(message) => return self.fail(fds, &message),
                        };
                        if glob::matches(&pattern, &subject) {
                            status = self.run_list(body, fds);
                            break 'arms;
                        }
                    }
                }
                status
            }
            CmdKind::Group(list) => self.run_list(list, fds),
            CmdKind::Subshell(list) => {
                let mut sub = self.subshell();
                let mut status = sub.run_list(list, fds);
                if let Some(Flow::Exit(code)) = sub.flow {
                    status = code;
                }
                status
            }
            CmdKind::Function(name, body) => {
                self.functions.insert(name.clone(), body.clone());
                0
            }
        };
        self.status = status;
        status
    }

    /// After a loop body: whether the loop ends (break, or a flow for an outer construct).
    fn loop_flow(&mut self) -> bool {
        match self.flow.take() {
            None => false,
            Some(Flow::Break(n)) => {
                if n > 1 {
                    self.flow = Some(Flow::Break(n - 1));
                }
                true
            }
            Some(Flow::Continue(n)) if n > 1 => {
                self.flow = Some(Flow::Continue(n - 1));
                true
            }
            Some(Flow::Continue(_)) => false,
            Some(other) => {
                self.flow = Some(other);
                true
            }
        }
    }

    fn fail(&mut self, fds: &Fds<'_>, message: &str) -> i32 {
        let _ = writeln!(fds.err.borrow_mut(), "sh: {message}");
        self.status = 1;
        1
    }

    fn set_var(&mut self, name: &str, value: String) {
        if name == "PWD" {
            self.cwd = ctx::normalize(&value);
        }
        self.vars.insert(name.to_owned(), value);
    }

    /// The environment an applet sees: exported variables (plus `extra`).
    fn env(&self, extra: &[(String, String)]) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self
            .exported
            .iter()
            .filter_map(|name| self.vars.get(name).map(|value| (name.clone(), value.clone())))
            .collect();
        env.extend(extra.iter().cloned());
        env
    }

    fn ctx(&self, extra: &[(String, String)]) -> Ctx {
        Ctx { cwd: self.cwd.clone(), env: self.env(extra), tty: false, depth: self.nesting + 1 }
    }

    fn redirect<'a>(&mut self, redirs: &[Redir], fds: &Fds<'a>) -> Result<Fds<'a>, String> {
        let mut fds = fds.clone();
        for redir in redirs {
            if redir.fd > 2 {
                continue;
            }
            let target = match &redir.op {
                RedirOp::HereDoc(..) => String::new(),
                _ => self.expand_string(&redir.target, &fds)?,
            };
            match &redir.op {
                RedirOp::Out | RedirOp::Append => {
                    let out: Out<'a> = match target.as_str() {
                        "/dev/null" => Rc::new(RefCell::new(io::sink())),
                        "/dev/stdout" => fds.out.clone(),
                        "/dev/stderr" => fds.err.clone(),
                        _ => {
                            let mut options = std::fs::OpenOptions::new();
                            options.write(true).create(true);
                            if matches!(redir.op, RedirOp::Append) {
                                options.append(true);
                            } else {
                                options.truncate(true);
                            }
                            let path = self.ctx(&[]).resolve(&target);
                            let file = options
                                .open(path)
                                .map_err(|e| format!("can't create {target}: {}", ctx::err_msg(&e)))?;
                            Rc::new(RefCell::new(io::BufWriter::new(file)))
                        }
                    };
                    match redir.fd {
                        2 => fds.err = out,
                        1 => fds.out = out,
                        _ => {}
                    }
                }
                RedirOp::HereString => {
                    if redir.fd == 0 {
                        fds.stdin = Rc::new(RefCell::new(Cursor::new(format!("{target}\n").into_bytes())));
                    }
                }
                RedirOp::In | RedirOp::ReadWrite => {
                    let input: In<'a> = match target.as_str() {
                        "/dev/null" => Rc::new(RefCell::new(io::empty())),
                        "/dev/stdin" => fds.stdin.clone(),
                        _ => {
                            let path = self.ctx(&[]).resolve(&target);
                            let file = std::fs::File::open(path)
                                .map_err(|e| format!("can't open {target}: {}", ctx::err_msg(&e)))?;
                            Rc::new(RefCell::new(io::BufReader::new(file)))
                        }
                    };
                    if redir.fd == 0 {
                        fds.stdin = input;
                    }
                }
                RedirOp::Dup => {
                    if target == "-" {
                        match redir.fd {
                            0 => fds.stdin = Rc::new(RefCell::new(io::empty())),
                            1 => fds.out = Rc::new(RefCell::new(io::sink())),
                            _ => fds.err = Rc::new(RefCell::new(io::sink())),
                        }
                        continue;
                    }
                    let source = match target.as_str() {
                        "1" => fds.out.clone(),
                        "2" => fds.err.clone(),
                        "0" if redir.fd == 0 => continue,
                        _ => return Err(format!("{target}: bad file descriptor")),
                    };
                    match redir.fd {
                        1 => fds.out = source,
                        2 => fds.err = source,
                        _ => return Err(format!("{}: bad file descriptor", redir.fd)),
                    }
                }
                RedirOp::HereDoc(body, expand) => {
                    let body = body.borrow().clone();
                    let text = if *expand {
                        let word = parse::heredoc_word(&body).map_err(|_| "bad here-document".to_owned())?;
                        self.expand_string(&word, &fds)?
                    } else {
                        body
                    };
                    fds.stdin = Rc::new(RefCell::new(Cursor::new(text.into_bytes())));
                }
            }
        }
        Ok(fds)
    }

    fn run_simple(&mut self, assigns: &[(String, Word)], words: &[Word], fds: &Fds<'_>) -> i32 {
        self.subst_status = None;
        let argv = match self.expand_words(words, fds) {
            Ok(argv) => argv,
            Err(message) => return self.fail(fds, &message),
        };
        let mut values = Vec::new();
        for (name, word) in assigns {
            match self.expand_string(word, fds) {
                Ok(value) => values.push((name.clone(), value)),
                Err(message) => return self.fail(fds, &message),
            }
        }
        if argv.is_empty() {
            for (name, value) in values {
                self.set_var(&name, value);
            }
            return self.subst_status.unwrap_or(0);
        }
        if self.xtrace {
            let _ = writeln!(fds.err.borrow_mut(), "+ {}", argv.join(" "));
        }
        self.run_argv(&argv, values, fds)
    }

    fn run_argv(&mut self, argv: &[String], values: Vec<(String, String)>, fds: &Fds<'_>) -> i32 {
        let name = argv[0].as_str();
        if BUILTINS.contains(&name) {
            for (var, value) in values {
                self.set_var(&var, value);
            }
            return self.builtin(argv, fds);
        }
        if let Some(body) = self.functions.get(name).cloned() {
            for (var, value) in values {
                self.set_var(&var, value);
            }
            let saved = std::mem::replace(&mut self.positional, argv[1..].to_vec());
            self.nesting += 1;
            let mut status = self.run_command(&body, fds);
            self.nesting -= 1;
            self.positional = saved;
            if let Some(Flow::Return(code)) = self.flow {
                self.flow = None;
                status = code;
            }
            self.status = status;
            return status;
        }
        let applet_name = if name.contains('/') { ctx::basename(name) } else { name };
        let script = name.contains('/') && {
            let path = self.ctx(&[]).resolve(name);
            path.is_file() && applets::find(applet_name).is_none()
        };
        if script {
            let mut args = vec!["sh".to_owned()];
            args.extend(argv.iter().cloned());
            return self.run_applet(applets::find("sh").expect("sh is an applet"), &args, &values, fds);
        }
        match applets::find(applet_name) {
            Some(applet) => {
                let mut args = argv.to_vec();
                args[0] = applet_name.to_owned();
                self.run_applet(applet, &args, &values, fds)
            }
            None => {
                let _ = writeln!(fds.err.borrow_mut(), "sh: {name}: not found");
                127
            }
        }
    }

    fn run_applet(
        &mut self,
        applet: &applets::Entry,
        args: &[String],
        extra: &[(String, String)],
        fds: &Fds<'_>,
    ) -> i32 {
        let mut ctx = self.ctx(extra);
        ctx.tty = self.tty_out.is_some_and(|top| top == Rc::as_ptr(&fds.out).cast::<u8>() as usize);
        let mut input = ReadFd(&fds.stdin);
        let mut out = WriteFd(&fds.out);
        let mut err = WriteFd(&fds.err);
        applet.run(&mut ctx, args, &mut input, &mut out, &mut err)
    }

    fn builtin(&mut self, argv: &[String], fds: &Fds<'_>) -> i32 {
        let args = &argv[1..];
        let mut err = WriteFd(&fds.err);
        let mut out = WriteFd(&fds.out);
        let number = |arg: Option<&String>, default: i64| -> Result<i64, String> {
            arg.map_or(Ok(default), |a| a.parse().map_err(|_| format!("{}: Illegal number: {a}", argv[0])))
        };
        macro_rules! try_num {
            ($e:expr) => {
                match $e {
                    Ok(n) => n,
                    Err(message) => {
                        let _ = writeln!(err, "sh: {message}");
                        return 2;
                    }
                }
            };
        }
        match argv[0].as_str() {
            ":" | "wait" | "trap" | "umask" | "ulimit" | "alias" | "hash" => 0,
            "cd" => {
                let target = match args.first().map(String::as_str) {
                    None => self.vars.get("HOME").cloned().unwrap_or_else(|| "/".into()),
                    Some("-") => {
                        let old = self.vars.get("OLDPWD").cloned().unwrap_or_else(|| self.cwd.clone());
                        let _ = writeln!(out, "{old}");
                        old
                    }
                    Some(dir) => dir.to_owned(),
                };
                let path = self.ctx(&[]).abs(&target);
                let ok = if path == "/" { Ok(true) } else { std::fs::metadata(&path).map(|m| m.is_dir()) };
                match ok {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = writeln!(err, "sh: cd: can't cd to {target}: Not a directory");
                        return 2;
                    }
                    Err(e) => {
                        let _ = writeln!(err, "sh: cd: can't cd to {target}: {}", ctx::err_msg(&e));
                        return 2;
                    }
                }
                let old = std::mem::replace(&mut self.cwd, path.clone());
                self.vars.insert("OLDPWD".into(), old);
                self.vars.insert("PWD".into(), path);
                self.exported.insert("OLDPWD".into());
                self.exported.insert("PWD".into());
                0
            }
            "export" | "readonly" | "local" => {
                if args.is_empty() || args[0] == "-p" {
                    let mut names: Vec<&String> = self.exported.iter().collect();
                    names.sort();
                    for name in names {
                        if let Some(value) = self.vars.get(name) {
                            let _ = writeln!(out, "export {name}={}", quote(value));
                        }
                    }
                    return 0;
                }
                for arg in args {
                    let (name, value) = match arg.split_once('=') {
                        Some((name, value)) => (name, Some(value.to_owned())),
                        None => (arg.as_str(), None),
                    };
                    if let Some(value) = value {
                        self.set_var(name, value);
                    }
                    if argv[0] == "export" {
                        self.exported.insert(name.to_owned());
                    } else if !self.vars.contains_key(name) {
                        self.vars.insert(name.to_owned(), String::new());
                    }
                }
                0
            }
            "unset" => {
                let functions = args.first().is_some_and(|a| a == "-f");
                for name in args.iter().filter(|a| !a.starts_with('-')) {
                    if functions {
                        self.functions.remove(name);
                    } else {
                        self.vars.remove(name);
                        self.exported.remove(name);
                    }
                }
                0
            }
            "exit" => {
                let code = try_num!(number(args.first(), i64::from(self.status)));
                self.flow = Some(Flow::Exit((code & 0xff) as i32));
                (code & 0xff) as i32
            }
            "return" => {
                let code = try_num!(number(args.first(), i64::from(self.status)));
                self.flow = Some(Flow::Return((code & 0xff) as i32));
                (code & 0xff) as i32
            }
            "break" | "continue" => {
                let n = try_num!(number(args.first(), 1)).max(1) as u32;
                self.flow = Some(if argv[0] == "break" { Flow::Break(n) } else { Flow::Continue(n) });
                0
            }
            "shift" => {
                let n = try_num!(number(args.first(), 1)).max(0) as usize;
                if n > self.positional.len() {
                    return 1;
                }
                self.positional.drain(..n);
                0
            }
            "set" => {
                if args.is_empty() {
                    let mut vars: Vec<(&String, &String)> = self.vars.iter().collect();
                    vars.sort();
                    for (name, value) in vars {
                        let _ = writeln!(out, "{name}={}", quote(value));
                    }
                    return 0;
                }
                let mut i = 0;
                while let Some(arg) = args.get(i) {
                    if arg == "--" {
                        i += 1;
                        self.positional = args[i..].to_vec();
                        return 0;
                    }
                    let (on, flags) = match arg.chars().next() {
                        Some('-') => (true, &arg[1..]),
                        Some('+') => (false, &arg[1..]),
                        _ => {
                            self.positional = args[i..].to_vec();
                            return 0;
                        }
                    };
                    for flag in flags.chars() {
                        match flag {
                            'e' => self.errexit = on,
                            'x' => self.xtrace = on,
                            'o' => i += 1,
                            _ => {}
                        }
                    }
                    i += 1;
                }
                0
            }
            "read" => {
                let mut raw = false;
                let mut names = Vec::new();
                let mut i = 0;
                while let Some(arg) = args.get(i) {
                    match arg.as_str() {
                        "-r" => raw = true,
                        "-p" => {
                            i += 1;
                            if let Some(prompt) = args.get(i) {
                                let _ = err.write_all(prompt.as_bytes());
                            }
                        }
                        name => names.push(name.to_owned()),
                    }
                    i += 1;
                }
                let _ = out.flush();
                let mut text = String::new();
                let mut got_newline = false;
                while let Some(line) = read_line(&fds.stdin) {
                    let mut line = String::from_utf8_lossy(&line).into_owned();
                    got_newline = line.ends_with('\n');
                    if got_newline {
                        line.pop();
                    }
                    if !raw && line.ends_with('\\') && got_newline {
                        line.pop();
                        text.push_str(&line);
                        continue;
                    }
                    text.push_str(&line);
                    break;
                }
                if !raw {
                    let mut unescaped = String::new();
                    let mut chars = text.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' {
                            if let Some(next) = chars.next() {
                                unescaped.push(next);
                            }
                        } else {
                            unescaped.push(c);
                        }
                    }
                    text = unescaped;
                }
                if names.is_empty() {
                    self.set_var("REPLY", text.clone());
                } else {
                    let ifs = self.vars.get("IFS").cloned().unwrap_or_else(|| " \t\n".into());
                    let mut rest = text.trim_matches(|c| ifs.contains(c)).to_owned();
                    for (n, name) in names.iter().enumerate() {
                        if n + 1 == names.len() {
                            self.set_var(name, rest.clone());
                            break;
                        }
                        let (field, tail) = match rest.find(|c| ifs.contains(c)) {
                            Some(at) => {
                                (rest[..at].to_owned(), rest[at..].trim_start_matches(|c| ifs.contains(c)).to_owned())
                            }
                            None => (rest.clone(), String::new()),
                        };
                        self.set_var(name, field);
                        rest = tail;
                    }
                }
                i32::from(!got_newline && text.is_empty())
            }
            "eval" => {
                self.nesting += 1;
                let status = self.run_text(&args.join(" "), fds);
                self.nesting -= 1;
                status
            }
            "." | "source" => {
                let Some(file) = args.first() else {
                    let _ = writeln!(err, "sh: .: filename argument required");
                    return 2;
                };
                let text = match std::fs::read(self.ctx(&[]).resolve(file)) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) => {
                        let _ = writeln!(err, "sh: .: can't open '{file}': {}", ctx::err_msg(&e));
                        return 2;
                    }
                };
                self.nesting += 1;
                let saved = (args.len() > 1).then(|| std::mem::replace(&mut self.positional, args[1..].to_vec()));
                let status = match parse::parse(&text) {
                    Ok(program) => {
                        for list in &program {
                            self.run_list(list, fds);
                            if self.flow.is_some() {
                                break;
                            }
                        }
                        if let Some(Flow::Return(code)) = self.flow {
                            self.flow = None;
                            self.status = code;
                        }
                        self.status
                    }
                    Err(ParseError::Syntax(message)) => self.fail(fds, &message),
                    Err(ParseError::Incomplete) => self.fail(fds, "syntax error: unexpected end of file"),
                };
                if let Some(saved) = saved {
                    self.positional = saved;
                }
                self.nesting -= 1;
                status
            }
            "exec" => {
                if args.is_empty() {
                    return 0;
                }
                let status = self.run_argv(args, Vec::new(), fds);
                self.flow = Some(Flow::Exit(status));
                status
            }
            "command" => {
                if args.first().is_some_and(|a| a == "-v" || a == "-V") {
                    return self.describe(&args[1..], &mut out, &mut err, false);
                }
                if args.is_empty() {
                    return 0;
                }
                self.run_argv(args, Vec::new(), fds)
            }
            "type" => self.describe(args, &mut out, &mut err, true),
            _ => 127,
        }
    }

    fn describe(&self, names: &[String], out: &mut dyn Write, err: &mut dyn Write, verbose: bool) -> i32 {
        let mut status = 0;
        for name in names {
            let line = if BUILTINS.contains(&name.as_str()) {
                if verbose { format!("{name} is a shell builtin") } else { name.clone() }
            } else if self.functions.contains_key(name) {
                if verbose { format!("{name} is a function") } else { name.clone() }
            } else if applets::find(ctx::basename(name)).is_some() {
                let path = if name.contains('/') { name.clone() } else { format!("/bin/{name}") };
                if verbose { format!("{name} is {path}") } else { path }
            } else {
                if verbose {
                    let _ = writeln!(err, "{name}: not found");
                }
                status = 127;
                continue;
            };
            let _ = writeln!(out, "{line}");
        }
        status
    }

    // --- Expansion -------------------------------------------------------------------

    /// Words to fields: expansions, field splitting, pathname expansion, quote removal.
    fn expand_words(&mut self, words: &[Word], fds: &Fds<'_>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for word in words {
            for field in self.expand_fields(word, fds, true)? {
                let pattern = to_pattern(&field, true);
                if glob::has_magic(&pattern) {
                    let matches = glob::expand(&self.ctx(&[]), &pattern);
                    if !matches.is_empty() {
                        out.extend(matches);
                        continue;
                    }
                }
                out.push(field.iter().map(|(c, _)| *c).collect());
            }
        }
        Ok(out)
    }

    /// A word to one string, unsplit and unglobbed (assignments, redirections, `case`).
    fn expand_string(&mut self, word: &Word, fds: &Fds<'_>) -> Result<String, String> {
        let fields = self.expand_fields(word, fds, false)?;
        Ok(fields.into_iter().next().map(|f| f.into_iter().map(|(c, _)| c).collect()).unwrap_or_default())
    }

    /// A word to a pattern: quoted characters escaped, so only unquoted ones are magic.
    fn expand_pattern(&mut self, word: &Word, fds: &Fds<'_>) -> Result<String, String> {
        let fields = self.expand_fields(word, fds, false)?;
        Ok(fields.into_iter().next().map(|f| to_pattern(&f, false)).unwrap_or_default())
    }

    /// Expands a word into fields of (character, quoted); splits unquoted expansion
    /// results on `$IFS` when `split`.
    fn expand_fields(&mut self, word: &Word, fds: &Fds<'_>, split: bool) -> Result<Vec<Vec<(char, bool)>>, String> {
        let mut fields = Vec::new();
        let mut cur: Vec<(char, bool)> = Vec::new();
        let mut keep = false;
        let ifs = self.vars.get("IFS").cloned().unwrap_or_else(|| " \t\n".into());
        let push = |value: &str,
                    quoted: bool,
                    cur: &mut Vec<(char, bool)>,
                    keep: &mut bool,
                    fields: &mut Vec<Vec<(char, bool)>>| {
            if quoted || !split {
                cur.extend(value.chars().map(|c| (c, quoted)));
                *keep |= quoted;
                return;
            }
            for c in value.chars() {
                if ifs.contains(c) {
                    if !cur.is_empty() || *keep {
                        fields.push(std::mem::take(cur));
                        *keep = false;
                    }
                } else {
                    cur.push((c, false));
                }
            }
        };
        for (n, part) in word.iter().enumerate() {
            match part {
                Part::Lit(text) => {
                    if n == 0 && (text == "~" || text.starts_with("~/")) {
                        let home = self.vars.get("HOME").cloned().unwrap_or_else(|| "/".into());
                        cur.extend(home.chars().map(|c| (c, true)));
                        cur.extend(text[1..].chars().map(|c| (c, false)));
                    } else {
                        cur.extend(text.chars().map(|c| (c, false)));
                    }
                }
                Part::Quoted(text) => {
                    cur.extend(text.chars().map(|c| (c, true)));
                    keep = true;
                }
                Part::Param { name, op: ParamOp::None, quoted: true } if name == "@" && split => {
                    for (i, arg) in self.positional.iter().enumerate() {
                        if i > 0 {
                            fields.push(std::mem::take(&mut cur));
                        }
                        cur.extend(arg.chars().map(|c| (c, true)));
                        keep = true;
                    }
                }
                Part::Param { name, op, quoted } => {
                    let value = self.param(name, op, fds)?;
                    push(&value, *quoted, &mut cur, &mut keep, &mut fields);
                }
                Part::Cmd { list, quoted } => {
                    let value = self.command_subst(list, fds);
                    push(&value, *quoted, &mut cur, &mut keep, &mut fields);
                }
                Part::Arith { src, quoted } => {
                    let word = parse::heredoc_word(src).map_err(|_| format!("arithmetic syntax error: {src}"))?;
                    let text = self.expand_string(&word, fds)?;
                    let vars = &self.vars;
                    let value = arith::eval(&text, &|name| vars.get(name).cloned().unwrap_or_default())?;
                    push(&value.to_string(), *quoted, &mut cur, &mut keep, &mut fields);
                }
            }
        }
        if !cur.is_empty() || keep || !split {
            fields.push(cur);
        }
        Ok(fields)
    }

    fn command_subst(&mut self, list: &List, fds: &Fds<'_>) -> String {
        let buffer = Rc::new(RefCell::new(StageBuf::default()));
        let out: Out<'_> = buffer.clone();
        let sub_fds = Fds { stdin: fds.stdin.clone(), out, err: fds.err.clone() };
        let mut sub = self.subshell();
        let mut status = sub.run_list(list, &sub_fds);
        if let Some(Flow::Exit(code)) = sub.flow {
            status = code;
        }
        drop(sub_fds);
        self.status = status;
        self.subst_status = Some(status);
        let data = std::mem::take(&mut buffer.borrow_mut().data);
        let mut text = String::from_utf8_lossy(&data).into_owned();
        let trimmed = text.trim_end_matches('\n').len();
        text.truncate(trimmed);
        text
    }

    /// The value of a parameter, with its `${…}` operator applied.
    fn param(&mut self, name: &str, op: &ParamOp, fds: &Fds<'_>) -> Result<String, String> {
        let value: Option<String> = match name {
            "?" => Some(self.status.to_string()),
            "#" => Some(self.positional.len().to_string()),
            "$" => Some("1".into()),
            "!" => Some(String::new()),
            "-" => Some(format!("{}{}", if self.errexit { "e" } else { "" }, if self.xtrace { "x" } else { "" })),
            "0" => Some(self.arg0.clone()),
            "@" | "*" => (!self.positional.is_empty()).then(|| self.positional.join(" ")),
            n if n.chars().all(|c| c.is_ascii_digit()) => {
                n.parse::<usize>().ok().and_then(|i| self.positional.get(i.wrapping_sub(1)).cloned())
            }
            _ => self.vars.get(name).cloned(),
        };
        let operand = |shell: &mut Shell, raw: &str| -> Result<String, String> {
            let word = parse::operand_word(raw).map_err(|_| format!("{raw}: bad substitution"))?;
            shell.expand_string(&word, fds)
        };
        let unset = |colon: bool| value.as_ref().is_none_or(|v| colon && v.is_empty());
        Ok(match op {
            ParamOp::None => value.unwrap_or_default(),
            ParamOp::Len => value.unwrap_or_default().chars().count().to_string(),
            ParamOp::Default(colon, raw) => {
                if unset(*colon) {
                    operand(self, raw)?
                } else {
                    value.unwrap_or_default()
                }
            }
            ParamOp::Assign(colon, raw) => {
                if unset(*colon) {
                    let new = operand(self, raw)?;
                    self.set_var(name, new.clone());
                    new
                } else {
                    value.unwrap_or_default()
                }
            }
            ParamOp::Alt(colon, raw) => {
                if unset(*colon) {
                    String::new()
                } else {
                    operand(self, raw)?
                }
            }
            ParamOp::Error(colon, raw) => {
                if unset(*colon) {
                    let message = operand(self, raw)?;
                    let message = if message.is_empty() { "parameter not set".to_owned() } else { message };
                    return Err(format!("{name}: {message}"));
                }
                value.unwrap_or_default()
            }
            ParamOp::TrimPrefix(longest, raw) | ParamOp::TrimSuffix(longest, raw) => {
                let value = value.unwrap_or_default();
                let word = parse::operand_word(raw).map_err(|_| format!("{raw}: bad substitution"))?;
                let pattern = self.expand_pattern(&word, fds)?;
                let bounds: Vec<usize> = value.char_indices().map(|(i, _)| i).chain([value.len()]).collect();
                let prefix = matches!(op, ParamOp::TrimPrefix(..));
                let candidates: Box<dyn Iterator<Item = &usize>> = match (prefix, *longest) {
                    (true, false) | (false, true) => Box::new(bounds.iter()),
                    _ => Box::new(bounds.iter().rev()),
                };
                let mut result = value.clone();
                for &at in candidates {
                    let (piece, rest) =
                        if prefix { (&value[..at], &value[at..]) } else { (&value[at..], &value[..at]) };
                    if glob::matches(&pattern, piece) {
                        result = rest.to_owned();
                        break;
                    }
                }
                result
            }
        })
    }
}

/// A field as a glob pattern: quoted magic characters (and every backslash) escaped.
fn to_pattern(field: &[(char, bool)], escape_backslash: bool) -> String {
    let mut pattern = String::new();
    for &(c, quoted) in field {
        if (c == '\\' && (quoted || escape_backslash)) || (quoted && matches!(c, '*' | '?' | '[')) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// `value` quoted for `set`/`export -p` output.
fn quote(value: &str) -> String {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c)) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// Runs `script` with `sh -c` semantics on byte buffers: (status, stdout, stderr). For
/// tests.
#[cfg(test)]
pub fn run_for_test(ctx: &Ctx, script: &str, stdin: &[u8]) -> (i32, String, String) {
    let mut ctx = ctx.clone();
    let mut input = Cursor::new(stdin.to_vec());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let args = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let status = main(&mut ctx, &args, &mut input, &mut out, &mut err);
    (status, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

/// A terminal's stdin: each read returns at most one line, as a tty in canonical mode
/// does (and as the host's line discipline delivers them).
#[cfg(test)]
struct LineAtATime(Cursor<Vec<u8>>);

#[cfg(test)]
impl Read for LineAtATime {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.0.get_ref();
        let start = self.0.position() as usize;
        let end = data[start..].iter().position(|b| *b == b'\n').map_or(data.len(), |i| start + i + 1);
        let n = (end - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        self.0.set_position((start + n) as u64);
        Ok(n)
    }
}

/// Line-by-line reading from stdin must not consume past the current line, so a command
/// reading stdin sees the rest (stdin is buffered, as the process's `StdinLock` is).
#[cfg(test)]
pub fn interactive_for_test(ctx: &Ctx, input: &[u8]) -> (i32, String, String) {
    let mut ctx = ctx.clone();
    let mut stdin = io::BufReader::new(LineAtATime(Cursor::new(input.to_vec())));
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = main(&mut ctx, &["sh".to_owned()], &mut stdin, &mut out, &mut err);
    (status, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

#[cfg(test)]
pub mod tests;
