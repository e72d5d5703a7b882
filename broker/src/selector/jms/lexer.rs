//! Splits selector text into tokens, each with its character position.
//!
//! Literals follow JMS 2.0 §3.8.1.1, which borrows Java's syntax: strings in
//! single quotes with `''` for a quote; exact numbers in decimal, hex (`0x`)
//! or octal (leading `0`) with an optional `L`; approximate numbers with a
//! point or an exponent and an optional `F` or `D`. Keywords are
//! case-insensitive; identifiers are case-sensitive.

use std::fmt;

use super::SelectorError;

/// A reserved word. `NULL`, `TRUE` and `FALSE` are literals but reserved
/// all the same: none can be an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
    And,
    Or,
    Not,
    Between,
    Like,
    In,
    Is,
    Null,
    Escape,
    True,
    False,
}

impl Keyword {
    const ALL: [Keyword; 11] = [
        Keyword::And,
        Keyword::Or,
        Keyword::Not,
        Keyword::Between,
        Keyword::Like,
        Keyword::In,
        Keyword::Is,
        Keyword::Null,
        Keyword::Escape,
        Keyword::True,
        Keyword::False,
    ];

    fn of(word: &str) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|keyword| word.eq_ignore_ascii_case(keyword.name()))
    }

    fn name(self) -> &'static str {
        match self {
            Keyword::And => "AND",
            Keyword::Or => "OR",
            Keyword::Not => "NOT",
            Keyword::Between => "BETWEEN",
            Keyword::Like => "LIKE",
            Keyword::In => "IN",
            Keyword::Is => "IS",
            Keyword::Null => "NULL",
            Keyword::Escape => "ESCAPE",
            Keyword::True => "TRUE",
            Keyword::False => "FALSE",
        }
    }
}

/// An operator or punctuation mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Punct {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Open,
    Close,
    Comma,
}

impl Punct {
    fn text(self) -> &'static str {
        match self {
            Punct::Eq => "=",
            Punct::Ne => "<>",
            Punct::Lt => "<",
            Punct::Le => "<=",
            Punct::Gt => ">",
            Punct::Ge => ">=",
            Punct::Plus => "+",
            Punct::Minus => "-",
            Punct::Star => "*",
            Punct::Slash => "/",
            Punct::Open => "(",
            Punct::Close => ")",
            Punct::Comma => ",",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Identifier(String),
    Keyword(Keyword),
    /// A string literal, quotes removed and `''` unescaped.
    Text(String),
    /// An exact numeric literal's magnitude. The parser checks it fits a
    /// long, since `-9223372036854775808` fits only once negated.
    Integer(u64),
    Float(f64),
    Punct(Punct),
    /// After the last token, so the parser always has one to look at.
    End,
}

impl fmt::Display for Token {
    /// How error messages name the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Identifier(name) => write!(f, "identifier {name}"),
            Token::Keyword(keyword) => f.write_str(keyword.name()),
            Token::Text(text) => write!(f, "string '{}'", text.replace('\'', "''")),
            Token::Integer(n) => write!(f, "number {n}"),
            Token::Float(n) => write!(f, "number {n:?}"),
            Token::Punct(p) => write!(f, "'{}'", p.text()),
            Token::End => f.write_str("the end of the selector"),
        }
    }
}

/// A token and the character position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Spanned {
    pub(super) token: Token,
    pub(super) position: usize,
}

/// The tokens of `text`, ending with [`Token::End`].
pub(super) fn tokens(text: &str) -> Result<Vec<Spanned>, SelectorError> {
    // Indexing by character makes every position a character position.
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&c) = chars.get(at) {
        if c.is_whitespace() {
            at += 1;
            continue;
        }
        let (token, end) = if c == '\'' {
            string(&chars, at)?
        } else if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, at)) {
            number(&chars, at)?
        } else if is_identifier_start(c) {
            word(&chars, at)
        } else {
            punct(&chars, at)?
        };
        tokens.push(Spanned {
            token,
            position: at,
        });
        at = end;
    }
    tokens.push(Spanned {
        token: Token::End,
        position: chars.len(),
    });
    Ok(tokens)
}

fn next_is_digit(chars: &[char], at: usize) -> bool {
    chars.get(at + 1).is_some_and(char::is_ascii_digit)
}

/// Java identifier characters, approximated with Unicode's letters and
/// digits.
fn is_identifier_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_identifier_part(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// A string literal starting at the quote at `start`.
fn string(chars: &[char], start: usize) -> Result<(Token, usize), SelectorError> {
    let mut text = String::new();
    let mut at = start + 1;
    loop {
        match (chars.get(at), chars.get(at + 1)) {
            (Some('\''), Some('\'')) => {
                text.push('\'');
                at += 2;
            }
            (Some('\''), _) => return Ok((Token::Text(text), at + 1)),
            (Some(&c), _) => {
                text.push(c);
                at += 1;
            }
            (None, _) => {
                return Err(SelectorError::new(start, "string literal is not closed"));
            }
        }
    }
}

/// An identifier or keyword starting at `start`.
fn word(chars: &[char], start: usize) -> (Token, usize) {
    let end = scan(chars, start, is_identifier_part);
    let word: String = chars[start..end].iter().collect();
    let token = match Keyword::of(&word) {
        Some(keyword) => Token::Keyword(keyword),
        None => Token::Identifier(word),
    };
    (token, end)
}

/// The end of the run of characters from `start` that satisfy `keep`.
fn scan(chars: &[char], start: usize, keep: impl Fn(char) -> bool) -> usize {
    chars[start..]
        .iter()
        .position(|&c| !keep(c))
        .map_or(chars.len(), |n| start + n)
}

fn is(chars: &[char], at: usize, options: &str) -> bool {
    chars.get(at).is_some_and(|c| options.contains(*c))
}

/// A numeric literal starting at `start`: a digit, or a point before one.
fn number(chars: &[char], start: usize) -> Result<(Token, usize), SelectorError> {
    if chars[start] == '0' && is(chars, start + 1, "xX") {
        return hex(chars, start);
    }
    let mut end = scan(chars, start, |c| c.is_ascii_digit());
    let mut approximate = false;
    if is(chars, end, ".") {
        approximate = true;
        end = scan(chars, end + 1, |c| c.is_ascii_digit());
    }
    if is(chars, end, "eE") {
        approximate = true;
        let sign = usize::from(is(chars, end + 1, "+-"));
        let digits = end + 1 + sign;
        if !chars.get(digits).is_some_and(char::is_ascii_digit) {
            return Err(SelectorError::new(end, "exponent has no digits"));
        }
        end = scan(chars, digits, |c| c.is_ascii_digit());
    }
    let literal: String = chars[start..end].iter().collect();
    if is(chars, end, "fFdD") {
        return Ok((float(&literal, start)?, end + 1));
    }
    if approximate {
        return Ok((float(&literal, start)?, end));
    }
    let token = integer(&literal, start)?;
    let long_suffix = usize::from(is(chars, end, "lL"));
    Ok((token, end + long_suffix))
}

fn hex(chars: &[char], start: usize) -> Result<(Token, usize), SelectorError> {
    let digits = start + 2;
    let end = scan(chars, digits, |c| c.is_ascii_hexdigit());
    if end == digits {
        return Err(SelectorError::new(
            start,
            "hexadecimal literal has no digits",
        ));
    }
    let literal: String = chars[digits..end].iter().collect();
    let n = u64::from_str_radix(&literal, 16).map_err(|_| out_of_range(start))?;
    let long_suffix = usize::from(is(chars, end, "lL"));
    Ok((Token::Integer(n), end + long_suffix))
}

/// A decimal integer, or an octal one if it has a leading zero (as in Java).
fn integer(literal: &str, start: usize) -> Result<Token, SelectorError> {
    let (digits, radix) = match literal.strip_prefix('0') {
        Some(octal) if !octal.is_empty() => (octal, 8),
        _ => (literal, 10),
    };
    if radix == 8 && !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(SelectorError::new(
            start,
            format!("{literal} is not an octal number (a leading 0 means octal)"),
        ));
    }
    u64::from_str_radix(digits, radix)
        .map(Token::Integer)
        .map_err(|_| out_of_range(start))
}

fn float(literal: &str, start: usize) -> Result<Token, SelectorError> {
    literal
        .parse()
        .map(Token::Float)
        .map_err(|_| SelectorError::new(start, format!("{literal} is not a number")))
}

pub(super) fn out_of_range(position: usize) -> SelectorError {
    SelectorError::new(position, "number is out of the range of a long")
}

/// An operator or punctuation mark at `at`.
fn punct(chars: &[char], at: usize) -> Result<(Token, usize), SelectorError> {
    let next = chars.get(at + 1).copied();
    let (punct, len) = match (chars[at], next) {
        ('<', Some('>')) => (Punct::Ne, 2),
        ('<', Some('=')) => (Punct::Le, 2),
        ('>', Some('=')) => (Punct::Ge, 2),
        ('=', _) => (Punct::Eq, 1),
        ('<', _) => (Punct::Lt, 1),
        ('>', _) => (Punct::Gt, 1),
        ('+', _) => (Punct::Plus, 1),
        ('-', _) => (Punct::Minus, 1),
        ('*', _) => (Punct::Star, 1),
        ('/', _) => (Punct::Slash, 1),
        ('(', _) => (Punct::Open, 1),
        (')', _) => (Punct::Close, 1),
        (',', _) => (Punct::Comma, 1),
        ('!', Some('=')) => {
            return Err(SelectorError::new(at, "'!=' is written '<>' in a selector"));
        }
        ('"', _) => {
            return Err(SelectorError::new(
                at,
                "string literals take single quotes, not double",
            ));
        }
        (c, _) => {
            return Err(SelectorError::new(
                at,
                format!("unexpected character {c:?}"),
            ));
        }
    };
    Ok((Token::Punct(punct), at + len))
}
