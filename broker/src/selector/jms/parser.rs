//! Builds the expression tree from tokens by recursive descent, one function
//! per precedence level of JMS 2.0 §3.8.1.2, loosest first:
//!
//! ```text
//! or         := and (OR and)*
//! and        := not (AND not)*
//! not        := NOT not | predicate
//! predicate  := sum [ compare-op sum
//!                   | [NOT] BETWEEN sum AND sum
//!                   | [NOT] IN '(' string (',' string)* ')'
//!                   | [NOT] LIKE string [ESCAPE string]
//!                   | IS [NOT] NULL ]
//! sum        := product (('+' | '-') product)*
//! product    := unary (('*' | '/') unary)*
//! unary      := ('+' | '-') unary | primary
//! primary    := literal | identifier | '(' or ')'
//! ```
//!
//! Types are checked where the text alone decides them: a condition cannot
//! be a number or string, arithmetic and ordering need numbers, LIKE and IN
//! a string. Application properties could hold anything, so they pass, and
//! the evaluator's type rules apply to them per message.

use std::fmt::Display;

use super::ast::{ArithmeticOp, CompareOp, Expr, Kind, Literal, Node, too_deep};
use super::headers::Field;
use super::lexer::{Keyword, Punct, Spanned, Token, out_of_range};
use super::like::LikePattern;
use super::{DEPTH_MAX, IN_LIST_MAX, SelectorError};

/// The selector's condition; `None` if it has no tokens at all.
pub(super) fn parse(tokens: &[Spanned]) -> Result<Option<Expr>, SelectorError> {
    let mut parser = Parser {
        tokens,
        at: 0,
        nesting: 0,
    };
    if parser.peek().token == Token::End {
        return Ok(None);
    }
    let condition = parser.or()?;
    let next = parser.peek();
    if next.token != Token::End {
        return Err(SelectorError::new(
            next.position,
            format!(
                "expected an operator or the end of the selector, found {}",
                next.token
            ),
        ));
    }
    check(condition, Kind::Condition, "expected a condition").map(Some)
}

/// Stands in for the tokens' own end marker, which the parser never moves
/// past; only a lexer bug could make it needed.
static END: Spanned = Spanned {
    token: Token::End,
    position: 0,
};

struct Parser<'t> {
    tokens: &'t [Spanned],
    at: usize,
    /// How many `(`, `NOT` and signs enclose the current position: bounds
    /// the parser's own recursion, before any node exists to be too deep.
    nesting: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> &'t Spanned {
        self.tokens.get(self.at).unwrap_or(&END)
    }

    /// Consumes the current token; at the end, stays there.
    fn bump(&mut self) -> &'t Spanned {
        let current = self.peek();
        if current.token != Token::End {
            self.at += 1;
        }
        current
    }

    fn eat_keyword(&mut self, keyword: Keyword) -> bool {
        let found = self.peek().token == Token::Keyword(keyword);
        if found {
            self.bump();
        }
        found
    }

    fn eat_punct(&mut self, punct: Punct) -> bool {
        let found = self.peek().token == Token::Punct(punct);
        if found {
            self.bump();
        }
        found
    }

    /// An error at the current token: `expected`, and what was found.
    fn expected(&self, expected: impl Display) -> SelectorError {
        let found = self.peek();
        SelectorError::new(
            found.position,
            format!("expected {expected}, found {}", found.token),
        )
    }

    /// Runs `parse` one nesting level deeper.
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Expr, SelectorError>,
    ) -> Result<Expr, SelectorError> {
        if self.nesting >= DEPTH_MAX {
            return Err(too_deep(self.peek().position));
        }
        self.nesting += 1;
        let parsed = parse(self);
        self.nesting -= 1;
        parsed
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        self.chain(Keyword::Or, Self::and, Node::Or)
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        self.chain(Keyword::And, Self::not, Node::And)
    }

    /// One or more conditions joined by `keyword`, as one flat node.
    fn chain(
        &mut self,
        keyword: Keyword,
        term: fn(&mut Self) -> Result<Expr, SelectorError>,
        node: fn(Vec<Expr>) -> Node,
    ) -> Result<Expr, SelectorError> {
        let first = term(self)?;
        if self.peek().token != Token::Keyword(keyword) {
            return Ok(first);
        }
        let position = first.position;
        let needs = format!("{} needs conditions", Token::Keyword(keyword));
        let mut terms = vec![check(first, Kind::Condition, &needs)?];
        while self.eat_keyword(keyword) {
            terms.push(check(term(self)?, Kind::Condition, &needs)?);
        }
        Expr::new(node(terms), position)
    }

    fn not(&mut self) -> Result<Expr, SelectorError> {
        let position = self.peek().position;
        if !self.eat_keyword(Keyword::Not) {
            return self.predicate();
        }
        let operand = self.nested(Self::not)?;
        let operand = check(operand, Kind::Condition, "NOT needs a condition")?;
        Expr::new(Node::Not(Box::new(operand)), position)
    }

    fn predicate(&mut self) -> Result<Expr, SelectorError> {
        let left = self.sum()?;
        let token = &self.peek().token;
        if let Token::Punct(punct) = token {
            if let Some(op) = compare_op(*punct) {
                self.bump();
                return self.comparison(op, *punct, left);
            }
        }
        let negated = self.eat_keyword(Keyword::Not);
        match self.peek().token {
            Token::Keyword(Keyword::Between) => self.between(left, negated),
            Token::Keyword(Keyword::In) => self.in_list(left, negated),
            Token::Keyword(Keyword::Like) => self.like(left, negated),
            _ if negated => Err(self.expected("BETWEEN, IN or LIKE after NOT")),
            Token::Keyword(Keyword::Is) => self.is_null(left),
            _ => Ok(left),
        }
    }

    fn comparison(
        &mut self,
        op: CompareOp,
        punct: Punct,
        left: Expr,
    ) -> Result<Expr, SelectorError> {
        let right = self.sum()?;
        let (left, right) = match op {
            CompareOp::Eq | CompareOp::Ne => (left, right),
            // Strings and booleans only compare for equality.
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => {
                let needs = format!("{} needs numbers", Token::Punct(punct));
                (
                    check(left, Kind::Number, &needs)?,
                    check(right, Kind::Number, &needs)?,
                )
            }
        };
        let position = left.position;
        Expr::new(Node::Compare(op, Box::new(left), Box::new(right)), position)
    }

    fn between(&mut self, value: Expr, negated: bool) -> Result<Expr, SelectorError> {
        self.bump();
        let needs = "BETWEEN needs numbers";
        let low = check(self.sum()?, Kind::Number, needs)?;
        if !self.eat_keyword(Keyword::And) {
            return Err(self.expected("AND between the bounds of BETWEEN"));
        }
        let high = check(self.sum()?, Kind::Number, needs)?;
        let value = check(value, Kind::Number, needs)?;
        let position = value.position;
        let node = Node::Between {
            value: Box::new(value),
            low: Box::new(low),
            high: Box::new(high),
            negated,
        };
        Expr::new(node, position)
    }

    fn in_list(&mut self, value: Expr, negated: bool) -> Result<Expr, SelectorError> {
        self.bump();
        let value = check(value, Kind::Text, "IN needs a string")?;
        if !self.eat_punct(Punct::Open) {
            return Err(self.expected("'(' after IN"));
        }
        let mut list = Vec::new();
        loop {
            let item = self.peek();
            let Token::Text(text) = &item.token else {
                return Err(self.expected("a string literal in the IN list"));
            };
            if list.len() == IN_LIST_MAX {
                return Err(SelectorError::new(
                    item.position,
                    format!("an IN list holds at most {IN_LIST_MAX} strings"),
                ));
            }
            self.bump();
            list.push(text.clone());
            if self.eat_punct(Punct::Close) {
                break;
            }
            if !self.eat_punct(Punct::Comma) {
                return Err(self.expected("',' or ')' in the IN list"));
            }
        }
        let position = value.position;
        let node = Node::In {
            value: Box::new(value),
            list,
            negated,
        };
        Expr::new(node, position)
    }

    fn like(&mut self, value: Expr, negated: bool) -> Result<Expr, SelectorError> {
        self.bump();
        let value = check(value, Kind::Text, "LIKE needs a string")?;
        let pattern = self.peek();
        let Token::Text(text) = &pattern.token else {
            return Err(self.expected("a string literal pattern after LIKE"));
        };
        self.bump();
        let escape = if self.eat_keyword(Keyword::Escape) {
            Some(self.escape_char()?)
        } else {
            None
        };
        let compiled = LikePattern::compile(text, escape)
            .map_err(|why| SelectorError::new(pattern.position, why))?;
        let position = value.position;
        let node = Node::Like {
            value: Box::new(value),
            pattern: compiled,
            negated,
        };
        Expr::new(node, position)
    }

    /// The string literal after ESCAPE, which must be one character.
    fn escape_char(&mut self) -> Result<char, SelectorError> {
        let literal = self.peek();
        let Token::Text(text) = &literal.token else {
            return Err(self.expected("a string literal after ESCAPE"));
        };
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => {
                self.bump();
                Ok(c)
            }
            _ => Err(SelectorError::new(
                literal.position,
                "the ESCAPE string must be exactly one character",
            )),
        }
    }

    fn is_null(&mut self, value: Expr) -> Result<Expr, SelectorError> {
        self.bump();
        let negated = self.eat_keyword(Keyword::Not);
        if !self.eat_keyword(Keyword::Null) {
            return Err(self.expected(if negated {
                "NULL after IS NOT"
            } else {
                "NULL or NOT NULL after IS"
            }));
        }
        let position = value.position;
        let node = Node::IsNull {
            value: Box::new(value),
            negated,
        };
        Expr::new(node, position)
    }

    fn sum(&mut self) -> Result<Expr, SelectorError> {
        self.arithmetic(
            Self::product,
            &[
                (Punct::Plus, ArithmeticOp::Add),
                (Punct::Minus, ArithmeticOp::Subtract),
            ],
        )
    }

    fn product(&mut self) -> Result<Expr, SelectorError> {
        self.arithmetic(
            Self::unary,
            &[
                (Punct::Star, ArithmeticOp::Multiply),
                (Punct::Slash, ArithmeticOp::Divide),
            ],
        )
    }

    /// Operands joined by the operators in `ops`, left-associative.
    fn arithmetic(
        &mut self,
        operand: fn(&mut Self) -> Result<Expr, SelectorError>,
        ops: &[(Punct, ArithmeticOp)],
    ) -> Result<Expr, SelectorError> {
        let mut left = operand(self)?;
        loop {
            let found = ops
                .iter()
                .find(|(punct, _)| self.peek().token == Token::Punct(*punct));
            let Some(&(punct, op)) = found else {
                return Ok(left);
            };
            self.bump();
            let needs = format!("{} needs numbers", Token::Punct(punct));
            let left_checked = check(left, Kind::Number, &needs)?;
            let right = check(operand(self)?, Kind::Number, &needs)?;
            let position = left_checked.position;
            let node = Node::Arithmetic(op, Box::new(left_checked), Box::new(right));
            left = Expr::new(node, position)?;
        }
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        let sign = self.peek();
        let negative = match sign.token {
            Token::Punct(Punct::Minus) => true,
            Token::Punct(Punct::Plus) => false,
            _ => return self.primary(),
        };
        self.bump();
        // A negative literal, so that the least long can be written.
        if let (true, Token::Integer(magnitude)) = (negative, &self.peek().token) {
            let n = 0i64
                .checked_sub_unsigned(*magnitude)
                .ok_or_else(|| out_of_range(self.peek().position))?;
            self.bump();
            return Expr::new(Node::Literal(Literal::Integer(n)), sign.position);
        }
        let operand = self.nested(Self::unary)?;
        let needs = format!("{} needs a number", sign.token);
        let operand = check(operand, Kind::Number, &needs)?;
        if negative {
            Expr::new(Node::Negate(Box::new(operand)), sign.position)
        } else {
            Ok(operand)
        }
    }

    fn primary(&mut self) -> Result<Expr, SelectorError> {
        let current = self.peek();
        let node = match &current.token {
            Token::Integer(n) => {
                let n = i64::try_from(*n).map_err(|_| out_of_range(current.position))?;
                Node::Literal(Literal::Integer(n))
            }
            Token::Float(n) => Node::Literal(Literal::Float(*n)),
            Token::Text(s) => Node::Literal(Literal::Text(s.clone())),
            Token::Keyword(Keyword::True) => Node::Literal(Literal::Boolean(true)),
            Token::Keyword(Keyword::False) => Node::Literal(Literal::Boolean(false)),
            Token::Keyword(Keyword::Null) => {
                return Err(SelectorError::new(
                    current.position,
                    "NULL can only be tested, with IS NULL or IS NOT NULL",
                ));
            }
            Token::Identifier(name) => Node::Field(Field::resolve(name)),
            Token::Punct(Punct::Open) => {
                self.bump();
                let inner = self.nested(Self::or)?;
                if !self.eat_punct(Punct::Close) {
                    return Err(self.expected(format!(
                        "')' to close the '(' at position {}",
                        current.position
                    )));
                }
                return Ok(inner);
            }
            _ => return Err(self.missing_operand()),
        };
        self.bump();
        Expr::new(node, current.position)
    }

    /// The error for a token that cannot start an expression.
    fn missing_operand(&self) -> SelectorError {
        let found = self.peek();
        let after = match self.at.checked_sub(1).and_then(|i| self.tokens.get(i)) {
            Some(previous) => format!(" after {}", previous.token),
            None => String::new(),
        };
        let message = match found.token {
            Token::End => format!("expected an expression{after}"),
            ref token => format!("expected an expression{after}, found {token}"),
        };
        SelectorError::new(found.position, message)
    }
}

/// `expr` if it can be of the kind `allowed` (a property can be of any);
/// otherwise an error at `expr` that says what `needs` that kind.
fn check(expr: Expr, allowed: Kind, needs: &str) -> Result<Expr, SelectorError> {
    let kind = expr.kind();
    if kind == Kind::Unknown || kind == allowed {
        Ok(expr)
    } else {
        Err(SelectorError::new(
            expr.position,
            format!("{needs}, found {}", kind.described()),
        ))
    }
}

fn compare_op(punct: Punct) -> Option<CompareOp> {
    Some(match punct {
        Punct::Eq => CompareOp::Eq,
        Punct::Ne => CompareOp::Ne,
        Punct::Lt => CompareOp::Lt,
        Punct::Le => CompareOp::Le,
        Punct::Gt => CompareOp::Gt,
        Punct::Ge => CompareOp::Ge,
        _ => return None,
    })
}
