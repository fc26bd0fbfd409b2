//! The shell's parser: source text to the AST below, in one recursive-descent pass over
//! characters (the lexing of a word depends on where it stands, as in POSIX).

use std::cell::RefCell;
use std::rc::Rc;

/// One piece of a word, before expansion.
#[derive(Clone, Debug)]
pub enum Part {
    /// Unquoted literal text (globbed, not split).
    Lit(String),
    /// Quoted literal text ('…', "…" or a backslash escape).
    Quoted(String),
    /// `$NAME`, `${NAME…}`; `quoted` when inside "…".
    Param { name: String, op: ParamOp, quoted: bool },
    /// `$(…)` or backticks.
    Cmd { list: List, quoted: bool },
    /// `$((…))`, its raw source.
    Arith { src: String, quoted: bool },
}

/// The operator of a `${…}` expansion; operands are raw text, expanded when used.
#[derive(Clone, Debug)]
pub enum ParamOp {
    None,
    /// `${#X}`
    Len,
    /// `${X:-w}` (colon: also when empty) and `${X-w}`
    Default(bool, String),
    /// `${X:=w}`
    Assign(bool, String),
    /// `${X:+w}`
    Alt(bool, String),
    /// `${X:?w}`
    Error(bool, String),
    /// `${X#p}` / `${X##p}` (true: longest)
    TrimPrefix(bool, String),
    /// `${X%p}` / `${X%%p}`
    TrimSuffix(bool, String),
}

pub type Word = Vec<Part>;

#[derive(Clone, Debug)]
pub enum RedirOp {
    /// `>` / `>|`
    Out,
    /// `>>`
    Append,
    /// `<`
    In,
    /// `<>`
    ReadWrite,
    /// `>&N`, `<&N` (the target word is the fd, or `-` to close)
    Dup,
    /// `<<< word`: the word and a newline.
    HereString,
    /// `<<` / `<<-`: the body, filled when the parser reaches the end of the line; the
    /// flag says whether it expands (unquoted delimiter).
    HereDoc(Rc<RefCell<String>>, bool),
}

#[derive(Clone, Debug)]
pub struct Redir {
    pub fd: u32,
    pub op: RedirOp,
    pub target: Word,
}

#[derive(Clone, Debug)]
pub enum CmdKind {
    Simple { assigns: Vec<(String, Word)>, words: Vec<Word> },
    If { branches: Vec<(List, List)>, otherwise: Option<List> },
    For { var: String, items: Option<Vec<Word>>, body: List },
    Loop { cond: List, body: List, until: bool },
    Case { word: Word, arms: Vec<(Vec<Word>, List)> },
    Group(List),
    Subshell(List),
    Function(String, Rc<Command>),
}

#[derive(Clone, Debug)]
pub struct Command {
    pub kind: CmdKind,
    pub redirs: Vec<Redir>,
}

#[derive(Clone, Debug)]
pub struct Pipeline {
    pub bang: bool,
    pub cmds: Vec<Command>,
}

/// `p1 && p2 || p3`: the first pipeline and the rest with `true` for `&&`.
#[derive(Clone, Debug)]
pub struct AndOr {
    pub first: Pipeline,
    pub rest: Vec<(bool, Pipeline)>,
}

pub type List = Vec<AndOr>;

#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// The input ended inside a construct: an interactive shell reads another line.
    Incomplete,
    /// `syntax error: …`
    Syntax(String),
}

type PResult<T> = Result<T, ParseError>;

const RESERVED: &[&str] =
    &["if", "then", "elif", "else", "fi", "for", "in", "do", "done", "while", "until", "case", "esac", "{", "}", "!"];

/// Most nesting of constructs and substitutions the parser accepts (bounded recursion).
const MAX_DEPTH: usize = 50;

/// Parses a whole program: the complete commands of each line, in order.
pub fn parse(src: &str) -> PResult<Vec<List>> {
    let mut p = Parser::new(src);
    let mut program = Vec::new();
    loop {
        p.skip_blank_lines()?;
        if p.at_end() {
            break;
        }
        let list = p.complete_command()?;
        if !list.is_empty() {
            program.push(list);
        }
    }
    if !p.heredocs.is_empty() {
        return Err(ParseError::Incomplete);
    }
    Ok(program)
}

struct Parser {
    s: Vec<char>,
    i: usize,
    /// Here-documents whose body starts after the next newline: (delimiter, strip tabs, body).
    heredocs: Vec<(String, bool, Rc<RefCell<String>>)>,
    depth: usize,
    /// Reading a here-document body: `"` is literal and the end of input closes it.
    heredoc_mode: bool,
}

fn is_meta(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '|' | '&' | ';' | '<' | '>' | '(' | ')')
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn syntax(what: &str) -> ParseError {
    ParseError::Syntax(format!("syntax error: unexpected {what}"))
}

impl Parser {
    fn new(src: &str) -> Parser {
        Parser { s: src.chars().collect(), i: 0, heredocs: Vec::new(), depth: 0, heredoc_mode: false }
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.s.get(self.i + n).copied()
    }

    fn starts_with(&self, text: &str) -> bool {
        text.chars().enumerate().all(|(n, c)| self.peek_at(n) == Some(c))
    }

    /// Skips blanks, line continuations and a comment (not newlines).
    fn skip_ws(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r') => self.i += 1,
                Some('\\') if self.peek_at(1) == Some('\n') => self.i += 2,
                Some('#') => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.i += 1;
                    }
                }
                _ => return,
            }
        }
    }

    /// Consumes a newline, then reads any pending here-document bodies.
    fn newline(&mut self) -> PResult<()> {
        self.i += 1;
        let pending = std::mem::take(&mut self.heredocs);
        for (delim, strip, body) in pending {
            let mut text = String::new();
            loop {
                if self.at_end() {
                    return Err(ParseError::Incomplete);
                }
                let start = self.i;
                while !matches!(self.peek(), None | Some('\n')) {
                    self.i += 1;
                }
                let mut line: String = self.s[start..self.i].iter().collect();
                let had_newline = self.peek() == Some('\n');
                if had_newline {
                    self.i += 1;
                }
                if strip {
                    line = line.trim_start_matches('\t').to_owned();
                }
                if line == delim || line.trim_end_matches('\r') == delim {
                    break;
                }
                if !had_newline {
                    return Err(ParseError::Incomplete);
                }
                text.push_str(&line);
                text.push('\n');
            }
            *body.borrow_mut() = text;
        }
        Ok(())
    }

    fn skip_blank_lines(&mut self) -> PResult<()> {
        loop {
            self.skip_ws();
            if self.peek() == Some('\n') {
                self.newline()?;
            } else {
                return Ok(());
            }
        }
    }

    /// The operator at the cursor, if any (not consumed).
    fn op(&self) -> Option<&'static str> {
        const OPS: &[&str] = &[
            "&&", "||", ";;", "<<<", "<<-", "<<", ">>", ">&", "<&", "<>", ">|", ";", "&", "|", "(", ")", "<", ">", "\n",
        ];
        OPS.iter().copied().find(|op| self.starts_with(op))
    }

    /// The next word if it is a plain unquoted literal (for reserved words), not consumed.
    fn peek_reserved(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        let mut end = start;
        while end < self.s.len() && !is_meta(self.s[end]) && !matches!(self.s[end], '\'' | '"' | '\\' | '$' | '`') {
            end += 1;
        }
        if end < self.s.len() && !is_meta(self.s[end]) {
            return None;
        }
        let word: String = self.s[start..end].iter().collect();
        RESERVED.contains(&word.as_str()).then_some(word)
    }

    fn expect_reserved(&mut self, word: &str) -> PResult<()> {
        self.skip_blank_lines()?;
        match self.peek_reserved() {
            Some(w) if w == word => {
                self.i += w.chars().count();
                Ok(())
            }
            _ if self.at_end() => Err(ParseError::Incomplete),
            Some(w) => Err(syntax(&format!("\"{w}\" (expecting \"{word}\")"))),
            None => Err(syntax(&format!("word (expecting \"{word}\")"))),
        }
    }

    /// and-or lists separated by `;`/`&` up to the end of the line.
    fn complete_command(&mut self) -> PResult<List> {
        let mut list = Vec::new();
        loop {
            self.skip_ws();
            if self.at_end() {
                return Ok(list);
            }
            if self.peek() == Some('\n') {
                self.newline()?;
                return Ok(list);
            }
            list.push(self.and_or()?);
            self.skip_ws();
            match self.op() {
                Some(";" | "&") => self.i += 1,
                Some("\n") | None => {}
                Some(other) => return Err(syntax(&format!("\"{}\"", other.trim()))),
            }
        }
    }

    /// A list inside a construct: stops (without consuming) at one of `stops`, `)`, `;;`.
    fn compound_list(&mut self, stops: &[&str]) -> PResult<List> {
        let mut list = Vec::new();
        loop {
            self.skip_blank_lines()?;
            if self.at_end() {
                return Err(ParseError::Incomplete);
            }
            if let Some(word) = self.peek_reserved()
                && stops.contains(&word.as_str())
            {
                return Ok(list);
            }
            if matches!(self.op(), Some(")" | ";;")) {
                return Ok(list);
            }
            list.push(self.and_or()?);
            self.skip_ws();
            match self.op() {
                Some(";" | "&") => self.i += 1,
                Some("\n") => self.newline()?,
                _ => {}
            }
        }
    }

    fn and_or(&mut self) -> PResult<AndOr> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            self.skip_ws();
            let and = match self.op() {
                Some("&&") => true,
                Some("||") => false,
                _ => return Ok(AndOr { first, rest }),
            };
            self.i += 2;
            self.skip_blank_lines()?;
            if self.at_end() {
                return Err(ParseError::Incomplete);
            }
            rest.push((and, self.pipeline()?));
        }
    }

    fn pipeline(&mut self) -> PResult<Pipeline> {
        let mut bang = false;
        if self.peek_reserved().as_deref() == Some("!") {
            self.i += 1;
            bang = true;
        }
        let mut cmds = vec![self.command()?];
        loop {
            self.skip_ws();
            if self.op() != Some("|") {
                return Ok(Pipeline { bang, cmds });
            }
            self.i += 1;
            self.skip_blank_lines()?;
            if self.at_end() {
                return Err(ParseError::Incomplete);
            }
            cmds.push(self.command()?);
        }
    }

    fn command(&mut self) -> PResult<Command> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::Syntax("syntax error: nested too deeply".into()));
        }
        let result = self.command_inner();
        self.depth -= 1;
        result
    }

    fn command_inner(&mut self) -> PResult<Command> {
        self.skip_ws();
        if self.at_end() {
            return Err(ParseError::Incomplete);
        }
        let kind = match self.peek_reserved().as_deref() {
            Some("if") => {
                self.i += 2;
                self.if_clause()?
            }
            Some("for") => {
                self.i += 3;
                self.for_clause()?
            }
            Some(w @ ("while" | "until")) => {
                self.i += w.len();
                let cond = self.compound_list(&["do"])?;
                let body = self.do_group()?;
                CmdKind::Loop { cond, body, until: w == "until" }
            }
            Some("case") => {
                self.i += 4;
                self.case_clause()?
            }
            Some("{") => {
                self.i += 1;
                let list = self.compound_list(&["}"])?;
                self.expect_reserved("}")?;
                CmdKind::Group(list)
            }
            Some(w) if w != "!" => return Err(syntax(&format!("\"{w}\""))),
            _ => {
                if self.op() == Some("(") {
                    self.i += 1;
                    let list = self.compound_list(&[])?;
                    self.skip_ws();
                    if self.at_end() {
                        return Err(ParseError::Incomplete);
                    }
                    if self.op() != Some(")") {
                        return Err(syntax("token (expecting \")\")"));
                    }
                    self.i += 1;
                    CmdKind::Subshell(list)
                } else {
                    return self.simple_command();
                }
            }
        };
        let redirs = self.redirections()?;
        Ok(Command { kind, redirs })
    }

    fn do_group(&mut self) -> PResult<List> {
        self.expect_reserved("do")?;
        let body = self.compound_list(&["done"])?;
        self.expect_reserved("done")?;
        Ok(body)
    }

    fn if_clause(&mut self) -> PResult<CmdKind> {
        let mut branches = Vec::new();
        let mut otherwise = None;
        loop {
            let cond = self.compound_list(&["then"])?;
            self.expect_reserved("then")?;
            let body = self.compound_list(&["elif", "else", "fi"])?;
            branches.push((cond, body));
            match self.peek_reserved().as_deref() {
                Some("elif") => self.i += 4,
                Some("else") => {
                    self.i += 4;
                    otherwise = Some(self.compound_list(&["fi"])?);
                    self.expect_reserved("fi")?;
                    break;
                }
                _ => {
                    self.expect_reserved("fi")?;
                    break;
                }
            }
        }
        Ok(CmdKind::If { branches, otherwise })
    }

    fn for_clause(&mut self) -> PResult<CmdKind> {
        self.skip_ws();
        let (word, _) = self.word()?.ok_or_else(|| syntax("token (expecting a name)"))?;
        let var = literal(&word).filter(|v| is_name(v)).ok_or_else(|| syntax("word (expecting a name)"))?;
        self.skip_ws();
        let mut items = None;
        if self.op() == Some(";") {
            self.i += 1;
        } else {
            self.skip_blank_lines()?;
            if self.peek_reserved().as_deref() == Some("in") {
                self.i += 2;
                let mut list = Vec::new();
                loop {
                    self.skip_ws();
                    match self.op() {
                        Some(";") => {
                            self.i += 1;
                            break;
                        }
                        Some("\n") => {
                            self.newline()?;
                            break;
                        }
                        Some(other) => return Err(syntax(&format!("\"{}\"", other.trim()))),
                        None if self.at_end() => return Err(ParseError::Incomplete),
                        None => list.push(self.word()?.expect("not at end or operator").0),
                    }
                }
                items = Some(list);
            }
        }
        let body = self.do_group()?;
        Ok(CmdKind::For { var, items, body })
    }

    fn case_clause(&mut self) -> PResult<CmdKind> {
        self.skip_ws();
        let (word, _) = self.word()?.ok_or(ParseError::Incomplete)?;
        self.expect_reserved("in")?;
        let mut arms = Vec::new();
        loop {
            self.skip_blank_lines()?;
            if self.at_end() {
                return Err(ParseError::Incomplete);
            }
            if self.peek_reserved().as_deref() == Some("esac") {
                self.i += 4;
                break;
            }
            if self.op() == Some("(") {
                self.i += 1;
            }
            let mut patterns = Vec::new();
            loop {
                self.skip_ws();
                let (pattern, _) = self.word()?.ok_or_else(|| syntax("token in case pattern"))?;
                patterns.push(pattern);
                self.skip_ws();
                match self.op() {
                    Some("|") => self.i += 1,
                    Some(")") => {
                        self.i += 1;
                        break;
                    }
                    _ if self.at_end() => return Err(ParseError::Incomplete),
                    _ => return Err(syntax("word (expecting \")\")")),
                }
            }
            let body = self.compound_list(&["esac"])?;
            arms.push((patterns, body));
            self.skip_ws();
            if self.op() == Some(";;") {
                self.i += 2;
            }
        }
        Ok(CmdKind::Case { word, arms })
    }

    /// An IO number (`2` in `2>`) if one stands at the cursor.
    fn io_number(&self) -> Option<(u32, usize)> {
        let mut n = 0;
        while self.peek_at(n).is_some_and(|c| c.is_ascii_digit()) {
            n += 1;
        }
        if n > 0 && matches!(self.peek_at(n), Some('<' | '>')) {
            let digits: String = self.s[self.i..self.i + n].iter().collect();
            digits.parse().ok().map(|fd| (fd, n))
        } else {
            None
        }
    }

    /// A redirection at the cursor, if any.
    fn redirection(&mut self) -> PResult<Option<Redir>> {
        self.skip_ws();
        let (fd, skip) = match self.io_number() {
            Some((fd, n)) => (Some(fd), n),
            None => (None, 0),
        };
        let save = self.i;
        self.i += skip;
        let Some(op) =
            self.op().filter(|op| matches!(*op, "<<<" | "<<-" | "<<" | ">>" | ">&" | "<&" | "<>" | ">|" | "<" | ">"))
        else {
            self.i = save;
            return Ok(None);
        };
        self.i += op.len();
        self.skip_ws();
        let Some((target, raw)) = self.word()? else {
            return Err(if self.at_end() { ParseError::Incomplete } else { syntax("redirection target") });
        };
        let (default_fd, op) = match op {
            ">" | ">|" => (1, RedirOp::Out),
            ">>" => (1, RedirOp::Append),
            "<" => (0, RedirOp::In),
            "<>" => (0, RedirOp::ReadWrite),
            ">&" => (1, RedirOp::Dup),
            "<&" => (0, RedirOp::Dup),
            "<<<" => (0, RedirOp::HereString),
            _ => {
                let quoted = target.iter().any(|p| !matches!(p, Part::Lit(_)));
                let delim: String = raw.chars().filter(|c| !matches!(c, '\'' | '"' | '\\')).collect();
                let body = Rc::new(RefCell::new(String::new()));
                self.heredocs.push((delim, op == "<<-", body.clone()));
                (0, RedirOp::HereDoc(body, !quoted))
            }
        };
        Ok(Some(Redir { fd: fd.unwrap_or(default_fd), op, target }))
    }

    fn redirections(&mut self) -> PResult<Vec<Redir>> {
        let mut redirs = Vec::new();
        while let Some(redir) = self.redirection()? {
            redirs.push(redir);
        }
        Ok(redirs)
    }

    fn simple_command(&mut self) -> PResult<Command> {
        let mut assigns = Vec::new();
        let mut words: Vec<Word> = Vec::new();
        let mut redirs = Vec::new();
        loop {
            if let Some(redir) = self.redirection()? {
                redirs.push(redir);
                continue;
            }
            self.skip_ws();
            if self.at_end() || self.op().is_some() {
                // `name() compound`: a function definition.
                if words.len() == 1
                    && assigns.is_empty()
                    && self.starts_with("(")
                    && let Some(name) = literal(&words[0])
                        .filter(|n| is_name(n) || n.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c)))
                {
                    let save = self.i;
                    self.i += 1;
                    self.skip_ws();
                    if self.peek() == Some(')') {
                        self.i += 1;
                        self.skip_blank_lines()?;
                        let body = self.command()?;
                        return Ok(Command { kind: CmdKind::Function(name, Rc::new(body)), redirs: Vec::new() });
                    }
                    self.i = save;
                }
                break;
            }
            let (word, raw) = self.word()?.expect("not at an operator");
            if words.is_empty()
                && let Some((name, _)) = raw.split_once('=')
                && is_name(name)
            {
                let skip = name.chars().count() + 1;
                assigns.push((name.to_owned(), strip_prefix(word, skip)));
                continue;
            }
            words.push(word);
        }
        if words.is_empty() && assigns.is_empty() && redirs.is_empty() {
            return Err(match self.op() {
                Some(op) => syntax(&format!("\"{}\"", if op == "\n" { "newline" } else { op })),
                None => ParseError::Incomplete,
            });
        }
        Ok(Command { kind: CmdKind::Simple { assigns, words }, redirs })
    }

    /// Reads one word (none at an operator or the end) and its raw text.
    fn word(&mut self) -> PResult<Option<(Word, String)>> {
        let start = self.i;
        let mut parts = Vec::new();
        let mut lit = String::new();
        while let Some(c) = self.peek() {
            if is_meta(c) {
                break;
            }
            match c {
                '\'' => {
                    self.i += 1;
                    let from = self.i;
                    while self.peek().is_some_and(|c| c != '\'') {
                        self.i += 1;
                    }
                    if self.at_end() {
                        return Err(ParseError::Incomplete);
                    }
                    flush(&mut parts, &mut lit);
                    parts.push(Part::Quoted(self.s[from..self.i].iter().collect()));
                    self.i += 1;
                }
                '"' => {
                    self.i += 1;
                    flush(&mut parts, &mut lit);
                    let inner = self.double_quoted()?;
                    if inner.is_empty() {
                        parts.push(Part::Quoted(String::new()));
                    }
                    parts.extend(inner);
                }
                '\\' => match self.peek_at(1) {
                    Some('\n') => self.i += 2,
                    Some(next) => {
                        flush(&mut parts, &mut lit);
                        parts.push(Part::Quoted(next.to_string()));
                        self.i += 2;
                    }
                    None => return Err(ParseError::Incomplete),
                },
                '$' => {
                    flush(&mut parts, &mut lit);
                    let part = self.dollar(false)?;
                    parts.push(part);
                }
                '`' => {
                    flush(&mut parts, &mut lit);
                    let part = self.backquote(false)?;
                    parts.push(part);
                }
                _ => {
                    lit.push(c);
                    self.i += 1;
                }
            }
        }
        flush(&mut parts, &mut lit);
        if self.i == start {
            return Ok(None);
        }
        Ok(Some((parts, self.s[start..self.i].iter().collect())))
    }

    /// The inside of "…" after the opening quote, through the closing one.
    fn double_quoted(&mut self) -> PResult<Vec<Part>> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        loop {
            let Some(c) = self.peek() else {
                if self.heredoc_mode {
                    break;
                }
                return Err(ParseError::Incomplete);
            };
            match c {
                '"' if !self.heredoc_mode => {
                    self.i += 1;
                    break;
                }
                '\\' => match self.peek_at(1) {
                    Some('\n') => self.i += 2,
                    Some(next @ ('$' | '`' | '"' | '\\')) if !(self.heredoc_mode && next == '"') => {
                        lit.push(next);
                        self.i += 2;
                    }
                    Some(_) => {
                        lit.push('\\');
                        self.i += 1;
                    }
                    None => return Err(ParseError::Incomplete),
                },
                '$' => {
                    if !lit.is_empty() {
                        parts.push(Part::Quoted(std::mem::take(&mut lit)));
                    }
                    let part = self.dollar(true)?;
                    parts.push(part);
                }
                '`' => {
                    if !lit.is_empty() {
                        parts.push(Part::Quoted(std::mem::take(&mut lit)));
                    }
                    let part = self.backquote(true)?;
                    parts.push(part);
                }
                _ => {
                    lit.push(c);
                    self.i += 1;
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Quoted(lit));
        }
        Ok(parts)
    }

    fn backquote(&mut self, quoted: bool) -> PResult<Part> {
        self.i += 1;
        let mut src = String::new();
        loop {
            match self.peek() {
                None => return Err(ParseError::Incomplete),
                Some('`') => {
                    self.i += 1;
                    break;
                }
                Some('\\') if matches!(self.peek_at(1), Some('`' | '\\' | '$')) => {
                    src.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                Some(c) => {
                    src.push(c);
                    self.i += 1;
                }
            }
        }
        let list = parse(&src)?.into_iter().flatten().collect();
        Ok(Part::Cmd { list, quoted })
    }

    /// `$…` at the cursor.
    fn dollar(&mut self, quoted: bool) -> PResult<Part> {
        self.i += 1;
        match self.peek() {
            Some('(') if self.peek_at(1) == Some('(') => {
                self.i += 2;
                let from = self.i;
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None => return Err(ParseError::Incomplete),
                        Some('(') => depth += 1,
                        Some(')') if depth == 0 && self.peek_at(1) == Some(')') => break,
                        Some(')') if depth == 0 => return Err(syntax("\")\" in arithmetic")),
                        Some(')') => depth -= 1,
                        _ => {}
                    }
                    self.i += 1;
                }
                let src = self.s[from..self.i].iter().collect();
                self.i += 2;
                Ok(Part::Arith { src, quoted })
            }
            Some('(') => {
                self.i += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(ParseError::Syntax("syntax error: nested too deeply".into()));
                }
                let heredoc_mode = std::mem::replace(&mut self.heredoc_mode, false);
                let list = self.compound_list(&[]);
                self.heredoc_mode = heredoc_mode;
                let list = list?;
                self.depth -= 1;
                self.skip_ws();
                if self.at_end() {
                    return Err(ParseError::Incomplete);
                }
                if self.op() != Some(")") {
                    return Err(syntax("token (expecting \")\")"));
                }
                self.i += 1;
                Ok(Part::Cmd { list, quoted })
            }
            Some('{') => {
                self.i += 1;
                let from = self.i;
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None => return Err(ParseError::Incomplete),
                        Some('{') => depth += 1,
                        Some('}') if depth == 0 => break,
                        Some('}') => depth -= 1,
                        Some('\\') => self.i += 1,
                        Some('\'') if !quoted => {
                            self.i += 1;
                            while self.peek().is_some_and(|c| c != '\'') {
                                self.i += 1;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                let inner: String = self.s[from..self.i].iter().collect();
                self.i += 1;
                param_expr(&inner, quoted)
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let from = self.i;
                while self.peek().is_some_and(|c| c == '_' || c.is_ascii_alphanumeric()) {
                    self.i += 1;
                }
                Ok(Part::Param { name: self.s[from..self.i].iter().collect(), op: ParamOp::None, quoted })
            }
            Some(c) if c.is_ascii_digit() || "?#@*$!-".contains(c) => {
                self.i += 1;
                Ok(Part::Param { name: c.to_string(), op: ParamOp::None, quoted })
            }
            _ => Ok(if quoted { Part::Quoted("$".into()) } else { Part::Lit("$".into()) }),
        }
    }
}

/// Text expanded as a here-document body is: `$…` and backquotes expand, `\$`, `\``,
/// `\\` escape, everything else (quotes included) is literal. Used for unquoted
/// here-documents and `$((…))`.
pub fn heredoc_word(src: &str) -> PResult<Word> {
    let mut p = Parser::new(src);
    p.heredoc_mode = true;
    p.double_quoted()
}

/// Text read as the inside of one unquoted word, blanks and operators included (the
/// operand of `${X:-…}`): quotes are removed, expansions marked.
pub fn operand_word(src: &str) -> PResult<Word> {
    let mut p = Parser::new(src);
    let mut out = Vec::new();
    while !p.at_end() {
        match p.word()? {
            Some((word, _)) => out.extend(word),
            None => {
                out.push(Part::Quoted(p.s[p.i].to_string()));
                p.i += 1;
            }
        }
    }
    Ok(out)
}

/// `${…}`'s inside: `#NAME`, `NAME`, `NAME:-word`, `NAME#pat`…
fn param_expr(inner: &str, quoted: bool) -> PResult<Part> {
    let bad = || ParseError::Syntax(format!("${{{inner}}}: bad substitution"));
    if let Some(name) = inner.strip_prefix('#')
        && !name.is_empty()
        && (is_name(name) || name.chars().all(|c| c.is_ascii_digit()) || matches!(name, "@" | "*" | "?"))
    {
        return Ok(Part::Param { name: name.to_owned(), op: ParamOp::Len, quoted });
    }
    let name_len = if inner.starts_with(|c: char| c.is_ascii_digit()) {
        inner.chars().take_while(char::is_ascii_digit).count()
    } else if inner.starts_with(|c: char| "?#@*$!-".contains(c)) {
        1
    } else {
        inner.chars().take_while(|c| *c == '_' || c.is_ascii_alphanumeric()).count()
    };
    if name_len == 0 {
        return Err(bad());
    }
    let (name, rest) = inner.split_at(name_len);
    let name = name.to_owned();
    let (colon, rest) = match rest.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let op = if rest.is_empty() && !colon {
        ParamOp::None
    } else if let Some(w) = rest.strip_prefix('-') {
        ParamOp::Default(colon, w.to_owned())
    } else if let Some(w) = rest.strip_prefix('=') {
        ParamOp::Assign(colon, w.to_owned())
    } else if let Some(w) = rest.strip_prefix('+') {
        ParamOp::Alt(colon, w.to_owned())
    } else if let Some(w) = rest.strip_prefix('?') {
        ParamOp::Error(colon, w.to_owned())
    } else if colon {
        return Err(bad());
    } else if let Some(w) = rest.strip_prefix("##") {
        ParamOp::TrimPrefix(true, w.to_owned())
    } else if let Some(w) = rest.strip_prefix('#') {
        ParamOp::TrimPrefix(false, w.to_owned())
    } else if let Some(w) = rest.strip_prefix("%%") {
        ParamOp::TrimSuffix(true, w.to_owned())
    } else if let Some(w) = rest.strip_prefix('%') {
        ParamOp::TrimSuffix(false, w.to_owned())
    } else {
        return Err(bad());
    };
    Ok(Part::Param { name, op, quoted })
}

fn flush(parts: &mut Vec<Part>, lit: &mut String) {
    if !lit.is_empty() {
        parts.push(Part::Lit(std::mem::take(lit)));
    }
}

/// The word's text if it is one plain unquoted literal.
pub fn literal(word: &Word) -> Option<String> {
    match word.as_slice() {
        [Part::Lit(text)] => Some(text.clone()),
        _ => None,
    }
}

/// The word without its first `n` characters, which are plain literal text (`NAME=`).
fn strip_prefix(word: Word, mut n: usize) -> Word {
    let mut out = Vec::new();
    for part in word {
        if n == 0 {
            out.push(part);
            continue;
        }
        match part {
            Part::Lit(text) => {
                let count = text.chars().count();
                if count <= n {
                    n -= count;
                } else {
                    out.push(Part::Lit(text.chars().skip(n).collect()));
                    n = 0;
                }
            }
            other => {
                n = 0;
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_input_asks_for_more() {
        for src in [
            "if true; then",
            "echo 'abc",
            "echo \"x",
            "a |",
            "for x in 1 2; do echo",
            "cat <<EOF\nhi\n",
            "echo $(ls",
            "a &&",
        ] {
            assert_eq!(parse(src).unwrap_err(), ParseError::Incomplete, "{src}");
        }
        assert!(matches!(parse("fi").unwrap_err(), ParseError::Syntax(_)));
        assert!(matches!(parse("echo )").unwrap_err(), ParseError::Syntax(_)));
    }

    #[test]
    fn assignments_and_words() {
        let program = parse("A=1 B=\"x y\" cmd arg").unwrap();
        let CmdKind::Simple { assigns, words } = &program[0][0].first.cmds[0].kind else { panic!() };
        assert_eq!(assigns.len(), 2);
        assert_eq!(words.len(), 2);
    }
}
