//! Label and field selectors.
//!
//! [`LabelSelector`] is a port of k8s.io/apimachinery's `labels` package: the string
//! form of `?labelSelector=` (`app=web,tier in (front,back),!canary`) with the same
//! lexer, grammar, validation and error messages, and the structured meta/v1 form used
//! in Deployment and ReplicaSet specs. [`FieldSelector`] is a port of the `fields`
//! package (`?fieldSelector=status.phase=Running,spec.nodeName!=`), matched against an
//! object's JSON by dotted path.

use crate::error::ApiError;
use crate::validation::{go_quote, go_string_slice, is_qualified_name, is_valid_label_value};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How a label requirement relates a key to its values (Go's `selection.Operator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value` (also true when the label is absent)
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` (also true when the label is absent)
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>3` (integer comparison)
    GreaterThan,
    /// `key<3` (integer comparison)
    LessThan,
}

impl Operator {
    /// The operator as Go spells it (`selection.Operator`'s string).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equals => "=",
            Self::DoubleEquals => "==",
            Self::NotEquals => "!=",
            Self::In => "in",
            Self::NotIn => "notin",
            Self::Exists => "exists",
            Self::DoesNotExist => "!",
            Self::GreaterThan => "gt",
            Self::LessThan => "lt",
        }
    }
}

/// The binary operators, as Go lists them in "expected: …" errors.
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

/// One requirement of a label selector: a key, an operator and its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// `path: Invalid value: "v": detail`, as Go's `field.Invalid(...).Error()` reads.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value}: {detail}")
}

/// Go's `utilerrors.Aggregate` message: one error alone, or `[a, b]` (duplicates dropped).
fn aggregate(errors: Vec<String>) -> String {
    let mut seen = BTreeSet::new();
    let unique: Vec<String> = errors.into_iter().filter(|e| seen.insert(e.clone())).collect();
    if unique.len() == 1 { unique.join("") } else { format!("[{}]", unique.join(", ")) }
}

impl Requirement {
    /// Builds a requirement, checking it as Go's `labels.NewRequirement` does: a valid
    /// key; one value for `=`, `==`, `!=`; some values for `in`, `notin`; none for
    /// exists and does-not-exist; one integer for `gt`, `lt`; every value a valid label
    /// value. The error reads as Go's (`values[0][app]: Invalid value: …`).
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errors = Vec::new();
        let key_errors = is_qualified_name(key);
        if !key_errors.is_empty() {
            errors.push(invalid("key", &go_quote(key), &key_errors.join("; ")));
        }
        let values_value = go_string_slice(&values);
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errors.push(invalid(
                        "values",
                        &values_value,
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errors.push(invalid(
                        "values",
                        &values_value,
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errors.push(invalid(
                        "values",
                        &values_value,
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errors.push(invalid(
                        "values",
                        &values_value,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, value) in values.iter().enumerate() {
                    if value.parse::<i64>().is_err() {
                        errors.push(invalid(
                            &format!("values[{i}]"),
                            &go_quote(value),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
        }
        for (i, value) in values.iter().enumerate() {
            let value_errors = is_valid_label_value(value);
            if !value_errors.is_empty() {
                errors.push(invalid(&format!("values[{i}][{key}]"), &go_quote(value), &value_errors.join("; ")));
            }
        }
        if errors.is_empty() { Ok(Self { key: key.to_string(), operator, values }) } else { Err(aggregate(errors)) }
    }

    /// Whether labels, looked up by `lookup`, satisfy this requirement. `lookup` answers
    /// `None` for an absent label and `Some(None)` for one whose value is not a string,
    /// which satisfies no requirement.
    fn matches_with<'a>(&self, lookup: impl Fn(&str) -> Option<Option<&'a str>>) -> bool {
        let value = match lookup(&self.key) {
            Some(Some(value)) => Some(value),
            Some(None) => return false,
            None => None,
        };
        let has = |v: &str| self.values.iter().any(|candidate| candidate == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(actual)) = value.map(str::parse::<i64>) else {
                    return false;
                };
                let [wanted] = self.values.as_slice() else {
                    return false;
                };
                let Ok(wanted) = wanted.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan { actual > wanted } else { actual < wanted }
            }
        }
    }

    /// Whether a JSON label map satisfies this requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.matches_with(|key| labels.get(key).map(Value::as_str))
    }
}

impl fmt::Display for Requirement {
    /// Go's `Requirement.String`: `!key`, `key`, `key=v`, `key in (a,b)` (values sorted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label selector: requirements that must all hold. The empty selector matches
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key, as Go sorts them.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the string form (`?labelSelector=`), as Go's `labels.Parse`:
    /// `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>3`, `a<3`,
    /// comma-separated. A malformed selector is a 400 BadRequest whose message is Go's
    /// (`unable to parse requirement: found '', expected: ',', ')' or identifier`).
    #[allow(clippy::result_large_err, reason = "ApiError is the crate's error type")]
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut parser = Parser::new(s);
        let mut requirements = parser.parse().map_err(ApiError::bad_request)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Converts the structured meta/v1 form (Go's `metav1.LabelSelectorAsSelector`):
    /// `matchLabels` become `=` requirements, `matchExpressions` use `In`, `NotIn`,
    /// `Exists` or `DoesNotExist`. An empty selector matches everything.
    pub fn from_label_selector(selector: &metav1::LabelSelector) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(key, Operator::Equals, vec![value.clone()])?);
        }
        for expression in selector.match_expressions.iter().flatten() {
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!("{} is not a valid label selector operator", go_quote(other)));
                }
            };
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expression.key, operator, values)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// [`LabelSelector::from_label_selector`] of a selector as it appears in an object's
    /// JSON (`spec.selector` of a Deployment, a PodDisruptionBudget…).
    pub fn from_json(selector: &serde_json::Value) -> Result<Self, String> {
        let typed: metav1::LabelSelector = serde_json::from_value(selector.clone()).map_err(|e| e.to_string())?;
        Self::from_label_selector(&typed)
    }

    /// A selector requiring exactly these labels (Go's `SelectorFromSet`; not validated),
    /// as a Service's `spec.selector` is used.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        let requirements = labels
            .iter()
            .map(|(key, value)| Requirement {
                key: key.clone(),
                operator: Operator::Equals,
                values: vec![value.clone()],
            })
            .collect();
        Self { requirements }
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a JSON label map (`metadata.labels`) satisfies every requirement. A
    /// label whose value is not a string satisfies no requirement on its key.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether a typed label map (`ObjectMeta::labels`) satisfies every requirement.
    pub fn matches_map(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches_with(|key| labels.get(key).map(|v| Some(v.as_str()))))
    }

    /// The value the selector requires `key` to have, if it names exactly one
    /// (`key=v`, `key==v`, `key in (v)`), as Go's `RequiresExactMatch`.
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let requirement = self.requirements.iter().find(|r| r.key == key)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form (Go's `Selector.String`): requirements by key, joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// The lexer's tokens (Go's `labels.Token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn string_to_token(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(ch: u8) -> bool {
    matches!(ch, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Go's `labels.Lexer`, byte for byte (a NUL byte ends the input, as in Go).
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn read(&mut self) -> u8 {
        match self.s.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn scan_id_or_keyword(&mut self) -> (Token, String) {
        let mut buffer = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if is_special_symbol(ch) || is_whitespace(ch) {
                self.unread();
                break;
            }
            buffer.push(ch);
        }
        let token = string_to_token(&buffer).unwrap_or(Token::Identifier);
        (token, String::from_utf8_lossy(&buffer).into_owned())
    }

    fn scan_special_symbol(&mut self) -> (Token, String) {
        let mut last: Option<(Token, String)> = None;
        let mut buffer = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special_symbol(ch) {
                self.unread();
                break;
            }
            buffer.push(ch);
            if let Some(token) = string_to_token(&buffer) {
                last = Some((token, String::from_utf8_lossy(&buffer).into_owned()));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        last.unwrap_or_else(|| {
            (Token::Error, format!("error expected: keyword found '{}'", String::from_utf8_lossy(&buffer)))
        })
    }

    fn lex(&mut self) -> (Token, String) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            (Token::EndOfString, String::new())
        } else if is_special_symbol(ch) {
            self.unread();
            self.scan_special_symbol()
        } else {
            self.unread();
            self.scan_id_or_keyword()
        }
    }
}

/// Whether `in` and `notin` are keywords (after a key) or plain identifiers (values).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// Go's recursive-descent `labels.Parser`.
struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn new(s: &str) -> Self {
        let mut lexer = Lexer { s: s.as_bytes(), pos: 0 };
        let mut items = Vec::new();
        loop {
            let (token, literal) = lexer.lex();
            items.push((token, literal));
            if token == Token::EndOfString {
                break;
            }
        }
        Self { items, position: 0 }
    }

    fn item(&self, index: usize, context: Context) -> (Token, String) {
        let (token, literal) = self.items.get(index).cloned().unwrap_or((Token::EndOfString, String::new()));
        match token {
            Token::In | Token::NotIn if context == Context::Values => (Token::Identifier, literal),
            _ => (token, literal),
        }
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.item(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        self.position += 1;
        self.item(self.position - 1, context)
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement =
                        self.parse_requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!("found '{next_literal}', expected: identifier after ','"));
                            }
                        }
                        _ => {
                            return Err(format!("found '{literal}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!("found '{literal}', expected: !, identifier, or 'end of string'"));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, operator) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = operator {
            return Requirement::new(&key, operator, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values.into_iter().collect())
    }

    /// The key, and `Exists` or `DoesNotExist` when that is all there is.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let key_errors = is_qualified_name(&literal);
        if !key_errors.is_empty() {
            return Err(invalid("<nil>", &go_quote(&literal), &key_errors.join("; ")));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{literal}', expected: {BINARY_OPERATORS}")),
        })
    }

    /// `(a,b,c)`: the set of values, sorted.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{literal}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list of possibly empty identifiers, up to (not including) `)`.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.insert(literal);
                    let (next, next_literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{next_literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        values.insert(String::new());
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        values.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<` (empty at the end or a comma).
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(BTreeSet::from([literal]))
        } else {
            Err(format!("found '{literal}', expected: identifier"))
        }
    }
}

/// How a field requirement compares (Go's field selectors know only these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value`
    Equals,
    /// `field==value`
    DoubleEquals,
    /// `field!=value`
    NotEquals,
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    /// The value, unescaped.
    pub value: String,
}

impl FieldRequirement {
    /// Whether the object's value at this field (`""` when absent) compares as required.
    pub fn matches(&self, object: &Value) -> bool {
        let actual = field_value(object, &self.field);
        match self.operator {
            FieldOperator::Equals | FieldOperator::DoubleEquals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.operator == FieldOperator::NotEquals { "!=" } else { "=" };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A field selector: terms that must all hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Escapes `\`, `,` and `=` in a field selector value (Go's `fields.EscapeValue`).
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Go's `fields.UnescapeValue`.
fn unescape_field_value(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => out.push(escaped),
                Some(other) => {
                    return Err(format!("invalid field selector: invalid escape sequence: \\{other}"));
                }
                None => {
                    return Err("invalid field selector: invalid escape sequence: \\".to_string());
                }
            },
            // Go prints the rune with %v: its code point.
            ',' | '=' => {
                return Err(format!("invalid field selector: unescaped character in value: {}", u32::from(c)));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Splits on commas that are not escaped with a backslash (Go's `splitTerms`).
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at its first operator (Go's `splitTerm`: `!=`, then `==`, then `=`).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    const OPERATORS: [(&str, FieldOperator); 3] =
        [("!=", FieldOperator::NotEquals), ("==", FieldOperator::DoubleEquals), ("=", FieldOperator::Equals)];
    for (i, _) in term.char_indices() {
        let remaining = &term[i..];
        for (text, operator) in OPERATORS {
            if let Some(rest) = remaining.strip_prefix(text) {
                return Some((&term[..i], operator, rest));
            }
        }
    }
    None
}

/// The value at a dotted path into a JSON object, as a string: `""` when absent or
/// null, `true`/`false` and numbers in their JSON form.
fn field_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses `?fieldSelector=`, as Go's `fields.ParseSelector`: `f=v`, `f==v`, `f!=v`,
    /// comma-separated, with `\,`, `\=` and `\\` escapes in values. A malformed selector
    /// is a 400 BadRequest with Go's message.
    #[allow(clippy::result_large_err, reason = "ApiError is the crate's error type")]
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, value)) = split_term(part) else {
                return Err(ApiError::bad_request(format!("invalid selector: '{s}'; can't understand '{part}'")));
            };
            let value = unescape_field_value(value).map_err(ApiError::bad_request)?;
            requirements.push(FieldRequirement { field: field.to_string(), operator, value });
        }
        Ok(Self { requirements })
    }

    /// Fails with 400 `field label not supported: FIELD` for the first term whose field
    /// is not in `supported`.
    #[allow(clippy::result_large_err, reason = "ApiError is the crate's error type")]
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), ApiError> {
        match self.requirements.iter().find(|r| !supported.contains(&r.field.as_str())) {
            Some(r) => Err(ApiError::bad_request(format!("field label not supported: {}", r.field))),
            None => Ok(()),
        }
    }

    /// Whether every term holds for the object: each field is a dotted path into its
    /// JSON (`status.phase`, `spec.nodeName`); an absent field compares as `""`.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| r.matches(object))
    }

    /// The fields the selector names, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// The terms.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether the selector has no terms (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value the selector requires `field` to equal, if any (Go's `RequiresExactMatch`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator != FieldOperator::NotEquals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string form: terms (sorted as parsed) joined by `,`, values escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;
    use serde_json::json;

    fn labels(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn parse(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(selector) => selector,
            Err(e) => panic!("{s:?}: {}", e.message),
        }
    }

    fn parse_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(selector) => panic!("{s:?} parsed as {selector:?}"),
            Err(e) => {
                assert_eq!(e.reason, Reason::BadRequest);
                assert_eq!(e.code(), 400);
                e.message
            }
        }
    }

    #[test]
    fn parses_every_operator() {
        let cases = [
            ("a=b", "a", Operator::Equals, vec!["b"]),
            ("a==b", "a", Operator::DoubleEquals, vec!["b"]),
            ("a!=b", "a", Operator::NotEquals, vec!["b"]),
            ("a in (x,y)", "a", Operator::In, vec!["x", "y"]),
            ("a notin (x)", "a", Operator::NotIn, vec!["x"]),
            ("a", "a", Operator::Exists, vec![]),
            ("!a", "a", Operator::DoesNotExist, vec![]),
            ("a>3", "a", Operator::GreaterThan, vec!["3"]),
            ("a<3", "a", Operator::LessThan, vec!["3"]),
            ("a==", "a", Operator::DoubleEquals, vec![""]),
            ("a=", "a", Operator::Equals, vec![""]),
            ("a in ()", "a", Operator::In, vec![""]),
            ("a in (y,x,x)", "a", Operator::In, vec!["x", "y"]),
            ("in in (in,notin)", "in", Operator::In, vec!["in", "notin"]),
            ("example.com/app = web", "example.com/app", Operator::Equals, vec!["web"]),
        ];
        for (input, key, operator, values) in cases {
            let selector = parse(input);
            let expected =
                Requirement { key: key.into(), operator, values: values.into_iter().map(String::from).collect() };
            assert_eq!(selector.requirements(), &[expected], "{input}");
        }
    }

    #[test]
    fn parses_lists_and_whitespace() {
        let selector = parse("  tier in (front, back) ,app=web,\t!canary ,env ");
        let keys: Vec<&str> = selector.requirements().iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, vec!["app", "canary", "env", "tier"]);
        assert_eq!(selector.to_string(), "app=web,!canary,env,tier in (back,front)");
        assert!(parse("").is_empty());
        assert!(parse("   ").is_empty());
        assert_eq!(parse("x in (a,,b)").requirements()[0].values, vec!["", "a", "b"]);
        assert_eq!(parse("a!=b,c>5").to_string(), "a!=b,c>5");
        assert_eq!(parse("a in (b)").requires_exact_match("a"), Some("b"));
        assert_eq!(parse("a notin (b)").requires_exact_match("a"), None);
    }

    #[test]
    fn rejects_malformed_selectors() {
        assert_eq!(parse_err("a in ("), "unable to parse requirement: found '', expected: ',', ')' or identifier");
        assert_eq!(parse_err("a in (x"), "unable to parse requirement: found '', expected: ',' or ')'");
        assert_eq!(parse_err("a in x"), "unable to parse requirement: found 'x' expected: '('");
        assert_eq!(parse_err("a in (x y)"), "unable to parse requirement: found 'y', expected: ',' or ')'");
        assert_eq!(parse_err("=b"), "found '=', expected: !, identifier, or 'end of string'");
        assert_eq!(parse_err("a!b"), "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt");
        assert_eq!(parse_err("a b"), "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt");
        assert_eq!(parse_err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(parse_err("a,"), "found '', expected: identifier after ','");
        assert_eq!(parse_err("a,,b"), "found ',', expected: identifier after ','");
        assert_eq!(parse_err("!=a"), "found '!=', expected: !, identifier, or 'end of string'");
        assert_eq!(parse_err("!(a)"), "unable to parse requirement: found '(', expected: identifier");
        assert_eq!(parse_err("a=(b)"), "unable to parse requirement: found '(', expected: identifier");
        assert_eq!(parse_err("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(parse_err("a in (b,=)"), "unable to parse requirement: found '=', expected: ',', or identifier");
    }

    #[test]
    fn validates_keys_and_values() {
        let msg = parse_err("A_B/c=d");
        assert!(
            msg.starts_with(
                "unable to parse requirement: <nil>: Invalid value: \"A_B/c\": prefix part a lowercase RFC 1123"
            ),
            "{msg}"
        );
        let msg = parse_err("a=-b");
        assert!(
            msg.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be"),
            "{msg}"
        );
        let msg = parse_err(&format!("a={}", "x".repeat(64)));
        assert!(msg.ends_with(": must be no more than 63 bytes"), "{msg}");
        assert_eq!(
            parse_err("a>b"),
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            parse_err("a<"),
            "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        let msg = parse_err("a in (-x,-y)");
        assert!(msg.starts_with("unable to parse requirement: [values[0][a]: Invalid value: \"-x\""), "{msg}");
        assert!(msg.contains(", values[1][a]: Invalid value: \"-y\""), "{msg}");
    }

    #[test]
    fn matches_labels() {
        let l = labels(json!({"app": "web", "tier": "front", "replicas": "5", "weird": 7}));
        let yes = ["", "app", "app=web", "app==web", "app!=db", "tier in (front,back)", "tier notin (back)", "!canary"];
        for s in yes {
            assert!(parse(s).matches(&l), "{s} should match");
        }
        let no = ["app=db", "app!=web", "canary", "!app", "tier in (back)", "tier notin (front)", "app,canary"];
        for s in no {
            assert!(!parse(s).matches(&l), "{s} should not match");
        }
        assert!(parse("missing!=x").matches(&l));
        assert!(parse("missing notin (x)").matches(&l));
        assert!(!parse("missing in (x)").matches(&l));
        assert!(parse("replicas>4").matches(&l));
        assert!(!parse("replicas>5").matches(&l));
        assert!(parse("replicas<6").matches(&l));
        assert!(!parse("app>1").matches(&l));
        assert!(!parse("missing>1").matches(&l));
        // A non-string label value satisfies nothing.
        for s in ["weird", "weird=7", "weird!=7", "!weird", "weird>1"] {
            assert!(!parse(s).matches(&l), "{s}");
        }
        let typed: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert!(parse("app=web,!tier").matches_map(&typed));
        assert!(!parse("app=web,tier").matches_map(&typed));
        assert!(LabelSelector::from_map(&typed).matches(&l));
        assert_eq!(LabelSelector::from_map(&typed).to_string(), "app=web");
    }

    #[test]
    fn converts_structured_selectors() {
        let selector: metav1::LabelSelector = match serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "Exists"},
                {"key": "zone", "operator": "NotIn", "values": ["b"]}
            ]
        })) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let converted = LabelSelector::from_label_selector(&selector);
        assert_eq!(
            converted.as_ref().map(ToString::to_string).as_deref(),
            Ok("app=web,!canary,env,tier in (back,front),zone notin (b)")
        );
        let converted = converted.unwrap_or_default();
        assert!(converted.matches(&labels(json!({"app": "web", "tier": "back", "env": "prod"}))));
        assert!(!converted.matches(&labels(json!({"app": "web", "tier": "back", "env": "prod", "zone": "b"}))));
        assert!(LabelSelector::from_label_selector(&metav1::LabelSelector::default()).is_ok_and(|s| s.is_empty()));

        let with = |operator: &str, values: Option<Vec<&str>>| metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "k".into(),
                operator: operator.into(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
            match_labels: None,
        };
        assert_eq!(
            LabelSelector::from_label_selector(&with("In", None)),
            Err("values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty".into())
        );
        assert_eq!(
            LabelSelector::from_label_selector(&with("Exists", Some(vec!["a"]))),
            Err("values: Invalid value: []string{\"a\"}: values set must be empty for exists and does not exist".into())
        );
        assert_eq!(
            LabelSelector::from_label_selector(&with("Gt", Some(vec!["1"]))),
            Err("\"Gt\" is not a valid label selector operator".into())
        );
        let bad_key = metav1::LabelSelector {
            match_labels: Some([("bad key".to_string(), "v".to_string())].into()),
            match_expressions: None,
        };
        let err = LabelSelector::from_label_selector(&bad_key).err().unwrap_or_default();
        assert!(err.starts_with("key: Invalid value: \"bad key\": name part must consist"), "{err}");
    }

    fn field(s: &str) -> FieldSelector {
        match FieldSelector::parse(s) {
            Ok(selector) => selector,
            Err(e) => panic!("{s:?}: {}", e.message),
        }
    }

    #[test]
    fn parses_field_selectors() {
        let selector = field("status.phase=Running,spec.nodeName!=,metadata.name==web");
        assert_eq!(selector.fields().collect::<Vec<_>>(), vec!["metadata.name", "spec.nodeName", "status.phase"]);
        assert_eq!(selector.requirements()[0].operator, FieldOperator::DoubleEquals);
        assert_eq!(selector.to_string(), "metadata.name=web,spec.nodeName!=,status.phase=Running");
        assert_eq!(selector.requires_exact_match("status.phase"), Some("Running"));
        assert_eq!(selector.requires_exact_match("spec.nodeName"), None);
        assert!(field("").is_empty());
        assert!(field(",,").is_empty());
        let escaped = field(r"metadata.name=a\,b\=c\\d,x=y");
        assert_eq!(escaped.requirements()[0].value, r"a,b=c\d");
        assert_eq!(escaped.requirements()[1].field, "x");
        assert_eq!(escaped.to_string(), r"metadata.name=a\,b\=c\\d,x=y");
    }

    #[test]
    fn rejects_malformed_field_selectors() {
        let message = |s: &str| FieldSelector::parse(s).err().map(|e| (e.code(), e.message));
        assert_eq!(
            message("status.phase"),
            Some((400, "invalid selector: 'status.phase'; can't understand 'status.phase'".into()))
        );
        assert_eq!(message("a=b,c"), Some((400, "invalid selector: 'a=b,c'; can't understand 'c'".into())));
        assert_eq!(message("a=b=c"), Some((400, "invalid field selector: unescaped character in value: 61".into())));
        assert_eq!(message(r"a=b\x"), Some((400, r"invalid field selector: invalid escape sequence: \x".into())));
        assert_eq!(message(r"a=b\"), Some((400, r"invalid field selector: invalid escape sequence: \".into())));
        assert_eq!(message("a!==b"), Some((400, "invalid field selector: unescaped character in value: 61".into())));
    }

    #[test]
    fn checks_supported_fields() {
        let supported = ["metadata.name", "metadata.namespace", "status.phase"];
        assert!(field("metadata.name=a,status.phase=Running").check_supported(&supported).is_ok());
        let err = field("status.phase=Running,spec.foo=x").check_supported(&supported).err();
        assert_eq!(err.map(|e| (e.code(), e.message)), Some((400, "field label not supported: spec.foo".into())));
    }

    #[test]
    fn matches_objects_by_field() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"hostNetwork": true, "priority": 5},
            "status": {"phase": "Running"},
            "involvedObject": {"name": "web"}
        });
        let yes = [
            "",
            "metadata.name=web-1",
            "metadata.namespace==default",
            "status.phase!=Pending",
            "spec.nodeName=",
            "spec.nodeName==",
            "spec.hostNetwork=true",
            "spec.priority=5",
            "involvedObject.name=web",
            "status.phase=Running,metadata.name=web-1",
            "no.such.path=",
        ];
        for s in yes {
            assert!(field(s).matches(&pod), "{s} should match");
        }
        let no = [
            "metadata.name=web-2",
            "spec.nodeName!=",
            "spec.hostNetwork=false",
            "status.phase=Running,metadata.name=x",
        ];
        for s in no {
            assert!(!field(s).matches(&pod), "{s} should not match");
        }
        let scheduled = json!({"spec": {"nodeName": "node-1"}});
        assert!(field("spec.nodeName!=").matches(&scheduled));
        assert!(field("spec.nodeName=node-1").matches(&scheduled));
        assert!(!field("spec.nodeName=").matches(&scheduled));
    }

    #[test]
    fn escapes_field_values() {
        assert_eq!(escape_field_value(r"a,b=c\d"), r"a\,b\=c\\d");
        assert_eq!(unescape_field_value(&escape_field_value(r"x=,\y")), Ok(r"x=,\y".to_string()));
    }
}
