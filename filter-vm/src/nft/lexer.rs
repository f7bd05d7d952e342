//! Tokenizer for the nft rule language.
//!
//! nft's own scanner recognises addresses, prefixes and ranges with a pile of regular
//! expressions. Here a *word* is any run of `[A-Za-z0-9_.:/-]`, and the parser, which knows the
//! type expected at each position, decides whether `10.0.0.0/8`, `1024-65535`, `22:accept` or
//! `echo-request` is one value or several pieces. That keeps the lexer trivial and the
//! ambiguity in one place (see `Parser::split_word`).

use super::ast::Span;
use super::ParseError;

/// A token kind. Words and strings keep their text; everything else is punctuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A run of `[A-Za-z0-9_.:/-]`: keywords, names, numbers, addresses, `.` (concatenation),
    /// `-` (range), `:` (map data).
    Word(String),
    /// A `"…"` string, without the quotes.
    Str(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Semi,
    /// One or more line ends (comments included) collapsed into one token.
    Newline,
    /// `@`, before a set name.
    At,
    /// `=`, only in `elements = { … }`.
    Assign,
    /// `==`
    EqEq,
    /// `!=`
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    /// `&`
    Amp,
    /// `|`
    Pipe,
    /// `^`
    Caret,
    /// `<<`
    Shl,
    /// `>>`
    Shr,
    /// `+`, only in priorities (`filter + 10`).
    Plus,
    Eof,
}

impl Tok {
    /// How the token is quoted in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Semi => "';'".into(),
            Tok::Newline => "end of line".into(),
            Tok::At => "'@'".into(),
            Tok::Assign => "'='".into(),
            Tok::EqEq => "'=='".into(),
            Tok::NotEq => "'!='".into(),
            Tok::Lt => "'<'".into(),
            Tok::Le => "'<='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Ge => "'>='".into(),
            Tok::Amp => "'&'".into(),
            Tok::Pipe => "'|'".into(),
            Tok::Caret => "'^'".into(),
            Tok::Shl => "'<<'".into(),
            Tok::Shr => "'>>'".into(),
            Tok::Plus => "'+'".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')
}

/// Splits `text` into tokens, ending with one [`Tok::Eof`].
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut out: Vec<Token> = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut col) = (1u32, 1u32);
    // Pushes a token; consecutive line ends collapse so the parser skips one token, not many.
    let push = |out: &mut Vec<Token>, tok: Tok, span: Span| {
        if tok == Tok::Newline
            && matches!(
                out.last(),
                Some(Token {
                    tok: Tok::Newline,
                    ..
                })
            )
        {
            return;
        }
        out.push(Token { tok, span });
    };
    while let Some(&c) = chars.peek() {
        let span = Span { line, col };
        if c == '\n' {
            chars.next();
            push(&mut out, Tok::Newline, span);
            line = line.saturating_add(1);
            col = 1;
            continue;
        }
        if c == ' ' || c == '\t' || c == '\r' {
            chars.next();
            col = col.saturating_add(1);
            continue;
        }
        if c == '#' {
            // A comment runs to the end of the line; the line end itself stays a separator.
            while let Some(&c) = chars.peek() {
                if c == '\n' {
                    break;
                }
                chars.next();
                col = col.saturating_add(1);
            }
            continue;
        }
        if c == '"' {
            chars.next();
            col = col.saturating_add(1);
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => {
                        col = col.saturating_add(1);
                        break;
                    }
                    // nft strings have no escapes; refusing line ends keeps every token on one
                    // line, so the listing stays line-oriented.
                    Some('\n') | None => {
                        return Err(ParseError::at(span, "unterminated string (missing '\"')"));
                    }
                    Some(c) => {
                        col = col.saturating_add(1);
                        s.push(c);
                    }
                }
            }
            push(&mut out, Tok::Str(s), span);
            continue;
        }
        if is_word_char(c) {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if !is_word_char(c) {
                    break;
                }
                w.push(c);
                chars.next();
                col = col.saturating_add(1);
            }
            push(&mut out, Tok::Word(w), span);
            continue;
        }
        chars.next();
        col = col.saturating_add(1);
        // Takes `next` when it follows, for two-character operators.
        let mut eat = |next: char| {
            if chars.peek() == Some(&next) {
                chars.next();
                col = col.saturating_add(1);
                true
            } else {
                false
            }
        };
        let tok = match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            ';' => Tok::Semi,
            '@' => Tok::At,
            '&' => Tok::Amp,
            '|' => Tok::Pipe,
            '^' => Tok::Caret,
            '+' => Tok::Plus,
            '=' if eat('=') => Tok::EqEq,
            '=' => Tok::Assign,
            '!' if eat('=') => Tok::NotEq,
            '<' if eat('<') => Tok::Shl,
            '<' if eat('=') => Tok::Le,
            '<' => Tok::Lt,
            '>' if eat('>') => Tok::Shr,
            '>' if eat('=') => Tok::Ge,
            '>' => Tok::Gt,
            '$' => {
                return Err(ParseError::at(
                    span,
                    "variables ('$name', 'define') are not supported",
                ));
            }
            '\\' => {
                return Err(ParseError::at(
                    span,
                    "line continuations ('\\') are not supported",
                ))
            }
            other => {
                let shown = if other.is_control() {
                    format!("{other:?}")
                } else {
                    format!("'{other}'")
                };
                return Err(ParseError::at(span, format!("unexpected character {shown}")));
            }
        };
        push(&mut out, tok, span);
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span { line, col },
    });
    Ok(out)
}
