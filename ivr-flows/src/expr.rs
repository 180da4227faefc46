//! The condition language of `branch` and `set` steps.
//!
//! Deliberately tiny (comparisons, `in`, `and`/`or`/`not`, string/number/bool literals and a
//! fixed set of names) so that it can be type-checked before a flow goes live: a comparison of a
//! number with a string is a load-time error, not a silent `false` at 3 a.m.

use std::collections::BTreeMap;
use std::fmt;

/// Maximum nesting of parentheses/operators accepted (guards the recursive parser).
const MAX_DEPTH: usize = 32;

/// A runtime value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A number.
    Num(f64),
    /// A truth value.
    Bool(bool),
    /// A list literal (only on the right of `in`).
    List(Vec<Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Value::Num(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

/// Static types of expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Text.
    Str,
    /// Number.
    Num,
    /// Truth value.
    Bool,
    /// List of the given element type.
    List,
    /// Unknown (a variable assigned values of different types).
    Any,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Str => "text",
            Type::Num => "number",
            Type::Bool => "true/false",
            Type::List => "list",
            Type::Any => "any",
        })
    }
}

/// A name the expression can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// The caller's number.
    Caller,
    /// The number the caller dialled.
    Called,
    /// A session variable `vars.x`.
    Var(String),
    /// Local hour 0–23 at call start.
    Hour,
    /// Local minute 0–59 at call start.
    Minute,
    /// ISO weekday 1 (Monday) – 7 (Sunday).
    Weekday,
    /// True on working days (weekdays that are not holidays, plus make-up workdays).
    WorkingDay,
    /// True on public holidays from the calendar file.
    Holiday,
    /// The session language, `"zh"` or `"en"`.
    Language,
}

impl Name {
    /// The names the language knows (besides `vars.*`).
    pub const BUILTINS: &'static [&'static str] = &[
        "caller",
        "called",
        "time.hour",
        "time.minute",
        "time.weekday",
        "calendar.working_day",
        "calendar.holiday",
        "session.language",
    ];

    fn parse(s: &str) -> Option<Name> {
        Some(match s {
            "caller" => Name::Caller,
            "called" => Name::Called,
            "time.hour" => Name::Hour,
            "time.minute" => Name::Minute,
            "time.weekday" => Name::Weekday,
            "calendar.working_day" => Name::WorkingDay,
            "calendar.holiday" => Name::Holiday,
            "session.language" => Name::Language,
            _ => {
                let v = s.strip_prefix("vars.")?;
                if !is_var_name(v) {
                    return None;
                }
                Name::Var(v.to_string())
            }
        })
    }

    fn builtin_type(&self) -> Option<Type> {
        Some(match self {
            Name::Caller | Name::Called | Name::Language => Type::Str,
            Name::Hour | Name::Minute | Name::Weekday => Type::Num,
            Name::WorkingDay | Name::Holiday => Type::Bool,
            Name::Var(_) => return None,
        })
    }
}

/// True if `name` can be a session variable (`vars.NAME`): letters, digits and `_`, not empty.
/// The one rule for every place a flow names a variable (`into:`, `inputs:`, expressions).
pub fn is_var_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A name lookup.
    Name(Name),
    /// A list literal.
    List(Vec<Expr>),
    /// `not e`
    Not(Box<Expr>),
    /// `a and b`
    And(Box<Expr>, Box<Expr>),
    /// `a or b`
    Or(Box<Expr>, Box<Expr>),
    /// `a OP b`
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `a in [..]`
    In(Box<Expr>, Box<Expr>),
}

/// A parse or type error: byte-free character offset into the expression and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Character offset within the expression text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
}

fn err(offset: usize, message: impl Into<String>, hint: impl Into<String>) -> ExprError {
    ExprError {
        offset,
        message: message.into(),
        hint: hint.into(),
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            i += 1;
            let mut s = String::new();
            while i < chars.len() && chars[i] != c {
                s.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err(err(
                    start,
                    "unterminated string",
                    format!("close it with {c}"),
                ));
            }
            i += 1;
            out.push((start, Tok::Str(s)));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let n = text.parse::<f64>().map_err(|_| {
                err(
                    start,
                    format!("bad number {text}"),
                    "write digits like 42 or 3.5",
                )
            })?;
            out.push((start, Tok::Num(n)));
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = match two.as_str() {
                "==" => Some("=="),
                "!=" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                "&&" => Some("and"),
                "||" => Some("or"),
                _ => None,
            };
            if let Some(op) = op {
                i += 2;
                out.push((start, Tok::Op(op)));
                continue;
            }
            let op = match c {
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '!' => "not",
                '=' => return Err(err(start, "`=` is not a comparison", "use `==`")),
                _ => {
                    return Err(err(
                        start,
                        format!("unexpected character `{c}`"),
                        "see REFERENCE.md for the expression syntax",
                    ));
                }
            };
            i += 1;
            out.push((start, Tok::Op(op)));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(o, _)| *o)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        let hit = match self.peek() {
            Some(Tok::Op(o)) => *o == op,
            Some(Tok::Ident(w)) => w == op && matches!(op, "and" | "or" | "not" | "in"),
            _ => false,
        };
        if hit {
            self.at += 1;
        }
        hit
    }
    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(
                self.offset(),
                "expression nested too deeply",
                "simplify it",
            ));
        }
        Ok(())
    }
    fn or(&mut self) -> Result<Expr, ExprError> {
        self.enter()?;
        let mut left = self.and()?;
        while self.eat_op("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(left)
    }
    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        while self.eat_op("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }
    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.eat_op("not") {
            self.enter()?;
            let e = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let left = self.atom()?;
        let ops = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ];
        for (text, op) in ops {
            if self.eat_op(text) {
                let right = self.atom()?;
                return Ok(Expr::Cmp(op, Box::new(left), Box::new(right)));
            }
        }
        if self.eat_op("in") {
            let right = self.atom()?;
            return Ok(Expr::In(Box::new(left), Box::new(right)));
        }
        Ok(left)
    }
    fn atom(&mut self) -> Result<Expr, ExprError> {
        let offset = self.offset();
        let Some((_, tok)) = self.toks.get(self.at).cloned() else {
            return Err(err(
                offset,
                "expression ends too early",
                "complete the expression",
            ));
        };
        self.at += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Num(n) => Ok(Expr::Lit(Value::Num(n))),
            Tok::Ident(w) => match w.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                _ => Name::parse(&w).map(Expr::Name).ok_or_else(|| {
                    let hint = crate::diagnostic::suggest(&w, Name::BUILTINS.iter().copied(), || {
                        "use caller, vars.NAME, time.hour, calendar.working_day, ... or quote text".to_string()
                    });
                    err(offset, format!("unknown name `{w}`"), hint)
                }),
            },
            Tok::Op("(") => {
                let e = self.or()?;
                if !self.eat_op(")") {
                    return Err(err(self.offset(), "missing `)`", "close the parenthesis"));
                }
                Ok(e)
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if !self.eat_op("]") {
                    loop {
                        items.push(self.atom()?);
                        if self.eat_op("]") {
                            break;
                        }
                        if !self.eat_op(",") {
                            return Err(err(self.offset(), "expected `,` or `]` in list", "separate list items with commas"));
                        }
                    }
                }
                Ok(Expr::List(items))
            }
            Tok::Op(o) => Err(err(offset, format!("unexpected `{o}`"), "a value or name was expected here")),
        }
    }
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        at: 0,
        end: src.chars().count(),
        depth: 0,
    };
    let e = p.or()?;
    if p.at < p.toks.len() {
        return Err(err(
            p.offset(),
            "unexpected text after the expression",
            "join conditions with `and` / `or`",
        ));
    }
    Ok(e)
}

/// Types of session variables, inferred from every step that assigns them.
pub type VarTypes = BTreeMap<String, Type>;

fn compatible(a: Type, b: Type) -> bool {
    a == b || a == Type::Any || b == Type::Any
}

/// Infers the type of `e`, reporting the first type error.
pub fn type_of(e: &Expr, vars: &VarTypes) -> Result<Type, ExprError> {
    Ok(match e {
        Expr::Lit(Value::Str(_)) => Type::Str,
        Expr::Lit(Value::Num(_)) => Type::Num,
        Expr::Lit(Value::Bool(_)) => Type::Bool,
        Expr::Lit(Value::List(_)) | Expr::List(_) => {
            if let Expr::List(items) = e {
                let mut first: Option<Type> = None;
                for it in items {
                    let t = type_of(it, vars)?;
                    match first {
                        Some(f) if !compatible(f, t) => {
                            return Err(err(
                                0,
                                format!("list mixes {f} and {t}"),
                                "make every item the same type",
                            ));
                        }
                        _ => first = Some(t),
                    }
                }
            }
            Type::List
        }
        Expr::Name(n) => match n.builtin_type() {
            Some(t) => t,
            None => match n {
                Name::Var(v) => *vars.get(v.as_str()).ok_or_else(|| {
                    err(
                        0,
                        format!("vars.{v} is never set by any step"),
                        crate::diagnostic::suggest(v, vars.keys().map(String::as_str), || {
                            "set it with a set, collect, record, submit or lookup step, or list it in the flow's `inputs:`"
                                .to_string()
                        }),
                    )
                })?,
                _ => Type::Any,
            },
        },
        Expr::Not(x) => {
            expect(x, Type::Bool, vars, "`not`")?;
            Type::Bool
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            expect(a, Type::Bool, vars, "`and`/`or`")?;
            expect(b, Type::Bool, vars, "`and`/`or`")?;
            Type::Bool
        }
        Expr::Cmp(op, a, b) => {
            let (ta, tb) = (type_of(a, vars)?, type_of(b, vars)?);
            if !compatible(ta, tb) {
                return Err(err(
                    0,
                    format!("cannot compare {ta} with {tb}"),
                    "compare values of the same type, e.g. time.hour < 9 or vars.kind == 'noise'",
                ));
            }
            if matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge) && ta == Type::Bool {
                return Err(err(0, "cannot order true/false values", "use == or !="));
            }
            Type::Bool
        }
        Expr::In(a, b) => {
            let ta = type_of(a, vars)?;
            let Expr::List(items) = b.as_ref() else {
                return Err(err(
                    0,
                    "`in` needs a list on its right",
                    "write e.g. vars.district in ['江岸区', '江汉区']",
                ));
            };
            for it in items {
                let t = type_of(it, vars)?;
                if !compatible(ta, t) {
                    return Err(err(
                        0,
                        format!("`in` compares {ta} with a list of {t}"),
                        "make the list items the same type as the left side",
                    ));
                }
            }
            Type::Bool
        }
    })
}

fn expect(e: &Expr, want: Type, vars: &VarTypes, ctx: &str) -> Result<(), ExprError> {
    let t = type_of(e, vars)?;
    if compatible(t, want) {
        Ok(())
    } else {
        Err(err(
            0,
            format!("{ctx} needs {want} but got {t}"),
            "use a comparison such as vars.x == 'y'",
        ))
    }
}

/// Everything an expression can read at runtime.
pub trait Env {
    /// The value of a name, or `None` when a variable is not set yet.
    fn lookup(&self, name: &Name) -> Option<Value>;
}

/// Evaluates an expression. Unset variables compare as empty text; type mismatches that slipped
/// past the checker (an `Any` variable) evaluate to `false` rather than failing the call.
pub fn eval(e: &Expr, env: &dyn Env) -> Value {
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::Name(n) => env.lookup(n).unwrap_or(Value::Str(String::new())),
        Expr::List(items) => Value::List(items.iter().map(|i| eval(i, env)).collect()),
        Expr::Not(x) => Value::Bool(!truthy(&eval(x, env))),
        Expr::And(a, b) => Value::Bool(truthy(&eval(a, env)) && truthy(&eval(b, env))),
        Expr::Or(a, b) => Value::Bool(truthy(&eval(a, env)) || truthy(&eval(b, env))),
        Expr::Cmp(op, a, b) => {
            let (a, b) = (eval(a, env), eval(b, env));
            let ord = match (&a, &b) {
                (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
                (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
                (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
                _ => None,
            };
            let Some(ord) = ord else {
                return Value::Bool(*op == CmpOp::Ne);
            };
            use std::cmp::Ordering::*;
            Value::Bool(match op {
                CmpOp::Eq => ord == Equal,
                CmpOp::Ne => ord != Equal,
                CmpOp::Lt => ord == Less,
                CmpOp::Le => ord != Greater,
                CmpOp::Gt => ord == Greater,
                CmpOp::Ge => ord != Less,
            })
        }
        Expr::In(a, b) => {
            let a = eval(a, env);
            match eval(b, env) {
                Value::List(items) => Value::Bool(items.contains(&a)),
                _ => Value::Bool(false),
            }
        }
    }
}

/// Truthiness used by conditions: only `true` is true.
pub fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E;
    impl Env for E {
        fn lookup(&self, n: &Name) -> Option<Value> {
            match n {
                Name::Hour => Some(Value::Num(20.0)),
                Name::Var(v) if v == "kind" => Some(Value::Str("noise".into())),
                Name::WorkingDay => Some(Value::Bool(true)),
                _ => None,
            }
        }
    }

    fn run(src: &str) -> Value {
        eval(&parse(src).expect("parses"), &E)
    }

    #[test]
    fn evaluates() {
        assert_eq!(
            run("time.hour >= 18 or not calendar.working_day"),
            Value::Bool(true)
        );
        assert_eq!(
            run("vars.kind in ['noise', 'road'] and time.hour < 21"),
            Value::Bool(true)
        );
        assert_eq!(run("(vars.kind != \"noise\")"), Value::Bool(false));
    }

    #[test]
    fn type_errors() {
        let mut vars = VarTypes::new();
        vars.insert("kind".into(), Type::Str);
        let t = |s: &str| type_of(&parse(s).expect("parses"), &vars);
        assert!(t("time.hour == '9'").is_err());
        assert!(t("calendar.holiday and 3").is_err());
        assert!(t("vars.nope == 'x'").is_err());
        assert!(t("vars.kind in [1, 2]").is_err());
        assert_eq!(t("vars.kind == 'x' and time.hour < 9"), Ok(Type::Bool));
    }

    #[test]
    fn parse_errors() {
        for s in [
            "a ==",
            "time.hour = 3",
            "'open",
            "(((",
            "vars.",
            "1 2",
            "foo == 1",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
        let deep = "(".repeat(1000);
        assert!(parse(&deep).is_err());
    }
}
