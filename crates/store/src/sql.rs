//! One way to write a query for both backends.
//!
//! The queries of every feature but ingestion (privacy, activation, audiences, the portal,
//! the identity graph's upkeep) are written once, in SQLite's dialect, against [`Conn`]: the
//! subset of rusqlite's API they use, answered either by a rusqlite connection or by a
//! PostgreSQL transaction. On PostgreSQL the text is translated ([`pg_dialect`]: numbered
//! parameters, `IN m`, `INSERT OR IGNORE`, a few functions) and the values are converted to
//! and from whatever type the server declares, as SQLite's type affinity would. So a rule
//! (who may receive a campaign, what an erasure deletes) exists once, whichever database
//! holds the data.
//!
//! PostgreSQL is reached through the async client from a blocking thread: each call is
//! `block_on` on the runtime's handle, inside the one transaction the closure runs in.

use std::borrow::Cow;
use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Postgres(tokio_postgres::Error),
    /// A statement PostgreSQL would not prepare: its text (never values) and why.
    #[error("{} in: {}", pg_message(.1), .0)]
    Prepare(String, tokio_postgres::Error),
    #[error("the query returned no rows")]
    NoRows,
    #[error("column {0}: {1}")]
    Type(String, String),
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match crate::postgres::pg_error(e) {
        crate::StoreError::Postgres(m) => m,
        other => other.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for crate::StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Sqlite(e) => crate::StoreError::Database(e),
            Error::Postgres(e) => crate::postgres::pg_error(&e),
            Error::Prepare(sql, e) => crate::StoreError::Postgres(format!("{} in: {sql}", pg_message(&e))),
            Error::NoRows => crate::StoreError::Database(rusqlite::Error::QueryReturnedNoRows),
            Error::Type(i, m) => crate::StoreError::Postgres(format!("column {i}: {m}")),
        }
    }
}

/// `rusqlite::OptionalExtension` for both backends.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) | Err(Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ------------------------------------------------------------------------------ values

/// A parameter value as PostgreSQL receives it (borrowed from the caller).
#[derive(Debug)]
pub enum PgValue<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A value that can be bound on both backends.
pub trait Arg: rusqlite::ToSql + Sync {
    fn pg(&self) -> PgValue<'_>;
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn pg(&self) -> PgValue<'_> {
                PgValue::Int(*self as i64)
            }
        }
    )*};
}
int_arg!(i64, i32, u32, i16, u8);

impl Arg for usize {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Int(*self as i64)
    }
}
impl Arg for u64 {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Int(*self as i64)
    }
}
impl Arg for bool {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Int(i64::from(*self))
    }
}
impl Arg for f64 {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Real(*self)
    }
}
impl Arg for str {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Text(self)
    }
}
impl Arg for String {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Text(self)
    }
}
impl Arg for [u8] {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Blob(self)
    }
}
impl Arg for Vec<u8> {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Blob(self)
    }
}
impl<const N: usize> Arg for [u8; N] {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Blob(self)
    }
}
impl<T: Arg> Arg for Option<T> {
    fn pg(&self) -> PgValue<'_> {
        match self {
            Some(v) => v.pg(),
            None => PgValue::Null,
        }
    }
}
impl<T: Arg + ?Sized> Arg for &T {
    fn pg(&self) -> PgValue<'_> {
        (**self).pg()
    }
}
impl Arg for Box<str> {
    fn pg(&self) -> PgValue<'_> {
        PgValue::Text(self)
    }
}

/// Bound parameters: `params![...]`, an array, or `()`.
pub trait Params {
    fn args(&self) -> Vec<&dyn Arg>;
}
impl Params for &[&dyn Arg] {
    fn args(&self) -> Vec<&dyn Arg> {
        self.to_vec()
    }
}
impl<const N: usize> Params for &[&dyn Arg; N] {
    fn args(&self) -> Vec<&dyn Arg> {
        self.to_vec()
    }
}
impl<T: Arg, const N: usize> Params for [T; N] {
    fn args(&self) -> Vec<&dyn Arg> {
        self.iter().map(|a| a as &dyn Arg).collect()
    }
}
impl Params for () {
    fn args(&self) -> Vec<&dyn Arg> {
        Vec::new()
    }
}
/// Parameters from an iterator (`rusqlite::params_from_iter`).
pub struct ParamsFromIter<T>(pub Vec<T>);
pub fn params_from_iter<T: Arg, I: IntoIterator<Item = T>>(it: I) -> ParamsFromIter<T> {
    ParamsFromIter(it.into_iter().collect())
}
impl<T: Arg> Params for ParamsFromIter<T> {
    fn args(&self) -> Vec<&dyn Arg> {
        self.0.iter().map(|a| a as &dyn Arg).collect()
    }
}

/// `rusqlite::params!` for both backends.
#[macro_export]
#[doc(hidden)]
macro_rules! sql_params {
    () => { &[] as &[&dyn $crate::sql::Arg] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::Arg),+] as &[&dyn $crate::sql::Arg] };
}
pub use crate::sql_params as params;

impl ToSql for PgValue<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            PgValue::Null => Ok(IsNull::Yes),
            PgValue::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::OID => u32::try_from(*v)?.to_sql(ty, out),
                _ => v.to_string().as_str().to_sql(&Type::TEXT, out),
            },
            PgValue::Real(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::INT8 if v.fract() == 0.0 => (*v as i64).to_sql(ty, out),
                Type::INT4 if v.fract() == 0.0 => (*v as i32).to_sql(ty, out),
                Type::FLOAT8 => v.to_sql(ty, out),
                _ if ty.name() == "text" || ty.name() == "varchar" || ty.name() == "unknown" => v.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => v.to_sql(&Type::FLOAT8, out),
            },
            PgValue::Text(s) => match *ty {
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
            },
            PgValue::Blob(b) => match *ty {
                Type::TEXT | Type::VARCHAR => std::str::from_utf8(b)?.to_sql(ty, out),
                _ => b.to_sql(&Type::BYTEA, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column value as read from PostgreSQL, whatever its declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl<'a> FromSql<'a> for Owned {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        let arr = |n: usize| -> std::result::Result<&[u8], Box<dyn StdError + Sync + Send>> {
            raw.get(..n).ok_or_else(|| "short value".into())
        };
        Ok(match *ty {
            Type::INT8 => Owned::Int(i64::from_be_bytes(arr(8)?.try_into()?)),
            Type::INT4 => Owned::Int(i64::from(i32::from_be_bytes(arr(4)?.try_into()?))),
            Type::INT2 => Owned::Int(i64::from(i16::from_be_bytes(arr(2)?.try_into()?))),
            Type::OID => Owned::Int(i64::from(u32::from_be_bytes(arr(4)?.try_into()?))),
            Type::BOOL => Owned::Int(i64::from(arr(1)?[0] != 0)),
            Type::FLOAT8 => Owned::Real(f64::from_be_bytes(arr(8)?.try_into()?)),
            Type::FLOAT4 => Owned::Real(f64::from(f32::from_be_bytes(arr(4)?.try_into()?))),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Owned::Blob(raw.to_vec()),
            Type::JSONB => Owned::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_owned()),
            _ => Owned::Text(std::str::from_utf8(raw)?.to_owned()),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Owned::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (what `sum` of integers gives): an integer when it is one.
fn numeric(raw: &[u8]) -> std::result::Result<Owned, Box<dyn StdError + Sync + Send>> {
    let word = |i: usize| -> std::result::Result<i16, Box<dyn StdError + Sync + Send>> {
        Ok(i16::from_be_bytes(raw.get(i * 2..i * 2 + 2).ok_or("short numeric")?.try_into()?))
    };
    let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Owned::Real(f64::NAN));
    }
    let mut int: i128 = 0;
    let mut real = 0f64;
    let mut integral = dscale == 0;
    for i in 0..ndigits {
        let d = word(4 + i)?;
        let power = i32::from(weight) - i as i32;
        real += f64::from(d) * 10_000f64.powi(power);
        if power >= 0 {
            int = int.saturating_add(i128::from(d).saturating_mul(10_000i128.saturating_pow(power as u32)));
        } else if d != 0 {
            integral = false;
        }
    }
    let negative = sign == 0x4000;
    Ok(match (integral, i64::try_from(int)) {
        (true, Ok(v)) => Owned::Int(if negative { -v } else { v }),
        _ => Owned::Real(if negative { -real } else { real }),
    })
}

/// A type a column can be read as, on both backends.
pub trait FromCol: rusqlite::types::FromSql + Sized {
    fn from_owned(v: Owned) -> std::result::Result<Self, String>;
}

impl FromCol for i64 {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        match v {
            Owned::Int(i) => Ok(i),
            Owned::Real(f) if f.fract() == 0.0 => Ok(f as i64),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromCol for i32 {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        i32::try_from(i64::from_owned(v)?).map_err(|e| e.to_string())
    }
}
impl FromCol for u32 {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        u32::try_from(i64::from_owned(v)?).map_err(|e| e.to_string())
    }
}
impl FromCol for u64 {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        u64::try_from(i64::from_owned(v)?).map_err(|e| e.to_string())
    }
}
impl FromCol for usize {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        usize::try_from(i64::from_owned(v)?).map_err(|e| e.to_string())
    }
}
impl FromCol for bool {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        Ok(i64::from_owned(v)? != 0)
    }
}
impl FromCol for f64 {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        match v {
            Owned::Int(i) => Ok(i as f64),
            Owned::Real(f) => Ok(f),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl FromCol for String {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        match v {
            Owned::Text(s) => Ok(s),
            Owned::Blob(b) => String::from_utf8(b).map_err(|e| e.to_string()),
            other => Err(format!("expected text, found {}", if other == Owned::Null { "NULL" } else { "a number" })),
        }
    }
}
impl FromCol for Vec<u8> {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        match v {
            Owned::Blob(b) => Ok(b),
            Owned::Text(s) => Ok(s.into_bytes()),
            _ => Err("expected bytes".into()),
        }
    }
}
impl<T: FromCol> FromCol for Option<T> {
    fn from_owned(v: Owned) -> std::result::Result<Self, String> {
        match v {
            Owned::Null => Ok(None),
            v => T::from_owned(v).map(Some),
        }
    }
}

// ------------------------------------------------------------------------------ rows

/// One row, from either backend.
pub enum Row<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a tokio_postgres::Row),
}

/// A column by position (from 0) or by name.
pub trait ColIndex: rusqlite::RowIndex + tokio_postgres::row::RowIndex + std::fmt::Display + Copy {}
impl ColIndex for usize {}
impl ColIndex for &str {}

impl Row<'_> {
    pub fn get<I: ColIndex, T: FromCol>(&self, i: I) -> Result<T> {
        match self {
            Row::Lite(r) => Ok(r.get(i)?),
            Row::Pg(r) => {
                let v: Owned = r.try_get(i).map_err(Error::Postgres)?;
                T::from_owned(v).map_err(|m| Error::Type(i.to_string(), m))
            }
        }
    }
}

// ------------------------------------------------------------------------------ connections

/// A PostgreSQL transaction driven from a blocking thread.
pub struct PgConn<'a> {
    pub(crate) tx: &'a deadpool_postgres::Transaction<'a>,
    pub(crate) rt: tokio::runtime::Handle,
}

/// A connection of either backend (for PostgreSQL, the transaction a job runs in).
pub enum Conn<'a> {
    Lite(&'a rusqlite::Connection),
    Pg(PgConn<'a>),
}

impl<'a> From<&'a rusqlite::Connection> for Conn<'a> {
    fn from(c: &'a rusqlite::Connection) -> Self {
        Conn::Lite(c)
    }
}

enum LiteStmt<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Plain(rusqlite::Statement<'c>),
}

impl<'c> LiteStmt<'c> {
    fn get(&mut self) -> &mut rusqlite::Statement<'c> {
        match self {
            LiteStmt::Cached(s) => s,
            LiteStmt::Plain(s) => s,
        }
    }
}

/// A prepared statement.
pub struct Stmt<'c> {
    inner: StmtInner<'c>,
}

enum StmtInner<'c> {
    Lite(LiteStmt<'c>),
    Pg(&'c PgConn<'c>, tokio_postgres::Statement),
}

fn lite_args<'p>(args: &'p [&'p dyn Arg]) -> Vec<&'p dyn rusqlite::ToSql> {
    args.iter().map(|a| *a as &dyn rusqlite::ToSql).collect()
}

fn pg_args<'p>(args: &'p [&'p dyn Arg]) -> Vec<PgValue<'p>> {
    args.iter().map(|a| a.pg()).collect()
}

impl PgConn<'_> {
    fn prepare(&self, sql: &str, cached: bool) -> Result<tokio_postgres::Statement> {
        let text = pg_dialect(sql);
        let r = if cached { self.rt.block_on(self.tx.prepare_cached(&text)) } else { self.rt.block_on(self.tx.prepare(&text)) };
        r.map_err(|e| {
            let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            Error::Prepare(one_line.chars().take(300).collect(), e)
        })
    }

    fn run<T>(&self, f: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>) -> Result<T> {
        self.rt.block_on(f).map_err(Error::Postgres)
    }

    fn query(&self, stmt: &tokio_postgres::Statement, args: &[&dyn Arg]) -> Result<Vec<tokio_postgres::Row>> {
        let values = pg_args(args);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.run(self.tx.query(stmt, &refs))
    }

    fn execute(&self, stmt: &tokio_postgres::Statement, args: &[&dyn Arg]) -> Result<u64> {
        let values = pg_args(args);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.run(self.tx.execute(stmt, &refs))
    }
}

impl<'a> Conn<'a> {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    pub fn prepare_cached<'c>(&'c self, sql: &str) -> Result<Stmt<'c>> {
        Ok(Stmt {
            inner: match self {
                Conn::Lite(c) => StmtInner::Lite(LiteStmt::Cached(c.prepare_cached(sql)?)),
                Conn::Pg(p) => StmtInner::Pg(p, p.prepare(sql, true)?),
            },
        })
    }

    /// Prepared without caching: for text built at run time (lists of `?`).
    pub fn prepare<'c>(&'c self, sql: &str) -> Result<Stmt<'c>> {
        Ok(Stmt {
            inner: match self {
                Conn::Lite(c) => StmtInner::Lite(LiteStmt::Plain(c.prepare(sql)?)),
                Conn::Pg(p) => StmtInner::Pg(p, p.prepare(sql, false)?),
            },
        })
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T, P: Params>(&self, sql: &str, params: P, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs an `INSERT` into a table with an `id` key and returns the new row's id.
    pub fn insert_id<P: Params>(&self, sql: &str, params: P) -> Result<i64> {
        match self {
            Conn::Lite(c) => {
                self.prepare_cached(sql)?.execute(params)?;
                Ok(c.last_insert_rowid())
            }
            Conn::Pg(_) => self.prepare_cached(&format!("{sql} RETURNING id"))?.query_row(params, |r| r.get(0)),
        }
    }

    /// Statements without parameters, separated by `;` (savepoints and the like).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(p) => p.run(p.tx.batch_execute(sql)),
        }
    }
}

/// The rows of a query, fetched one at a time (SQLite) or all at once (PostgreSQL).
pub struct Rows<'s> {
    inner: RowsInner<'s>,
}

enum RowsInner<'s> {
    Lite(rusqlite::Rows<'s>),
    Pg(std::vec::IntoIter<tokio_postgres::Row>, Option<tokio_postgres::Row>),
}

impl<'s> Rows<'s> {
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match &mut self.inner {
            RowsInner::Lite(r) => Ok(r.next()?.map(Row::Lite)),
            RowsInner::Pg(it, current) => {
                *current = it.next();
                Ok(current.as_ref().map(Row::Pg))
            }
        }
    }
}

impl<'c> Stmt<'c> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let args = params.args();
        match &mut self.inner {
            StmtInner::Lite(s) => Ok(s.get().execute(lite_args(&args).as_slice())?),
            StmtInner::Pg(p, s) => Ok(p.execute(s, &args)? as usize),
        }
    }

    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>> {
        let args = params.args();
        Ok(Rows {
            inner: match &mut self.inner {
                StmtInner::Lite(s) => RowsInner::Lite(s.get().query(lite_args(&args).as_slice())?),
                StmtInner::Pg(p, s) => RowsInner::Pg(p.query(s, &args)?.into_iter(), None),
            },
        })
    }

    pub fn query_row<T, P: Params>(&mut self, params: P, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(Error::NoRows),
        }
    }

    /// Whether the query returns any row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        Ok(self.query(params)?.next()?.is_some())
    }

    pub fn query_map<T, P: Params, F: FnMut(&Row<'_>) -> Result<T>>(&mut self, params: P, mut f: F) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(params)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(f(&r));
        }
        Ok(out.into_iter())
    }
}

// ------------------------------------------------------------------------------ dialect

/// SQLite's text in PostgreSQL's dialect. Outside string literals: `?N` → `$N` (a bare `?`
/// takes the next number), `IN m` → `IN (SELECT id FROM m)` (SQLite lets a table follow
/// `IN`), `INSERT OR IGNORE` → `ON CONFLICT DO NOTHING`, `ifnull` → `coalesce`, `instr` →
/// `strpos`, `json_extract(x, '$.a')` → `(x::json -> 'a')::text`, `CAST(x AS INTEGER)` →
/// `BIGINT`, `REAL` → `DOUBLE PRECISION`, and a unary `+` (SQLite's way to keep an index out
/// of a plan) dropped.
pub fn pg_dialect(sql: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(sql.len() + 32);
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut next_param = 1u32;
    let mut ignore = false;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let upper = sql.to_ascii_uppercase();
    let ub = upper.as_bytes();
    let starts = |i: usize, w: &str| ub[i..].starts_with(w.as_bytes()) && (i == 0 || !is_ident(ub[i - 1]));
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' {
            // A string literal, copied as is ('' escapes a quote).
            let start = i;
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
            out.push_str(&sql[start..i]);
            continue;
        }
        if b == b'?' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            let n: u32 = if j > i + 1 { sql[i + 1..j].parse().unwrap_or(next_param) } else { next_param };
            next_param = next_param.max(n + 1);
            out.push('$');
            out.push_str(&n.to_string());
            i = j;
            continue;
        }
        if b == b'+' && i + 1 < bytes.len() && bytes[i + 1].is_ascii_alphabetic() && (i == 0 || matches!(bytes[i - 1], b' ' | b'(' | b',' | b'\n')) {
            i += 1;
            continue;
        }
        if starts(i, "INSERT OR IGNORE ") {
            out.push_str("INSERT ");
            i += "INSERT OR IGNORE ".len();
            ignore = true;
            continue;
        }
        if starts(i, "IN M") && !bytes.get(i + 4).copied().is_some_and(is_ident) {
            out.push_str("IN (SELECT id FROM m)");
            i += 4;
            continue;
        }
        if starts(i, "IFNULL(") {
            out.push_str("coalesce(");
            i += 7;
            continue;
        }
        if starts(i, "INSTR(") {
            out.push_str("strpos(");
            i += 6;
            continue;
        }
        if starts(i, "AS INTEGER)") {
            out.push_str("AS BIGINT)");
            i += 11;
            continue;
        }
        if starts(i, "ZEROBLOB(") {
            // zeroblob(N): N zero bytes.
            if let Some(end) = sql[i + 9..].find(')') {
                if let Ok(n) = sql[i + 9..i + 9 + end].trim().parse::<usize>() {
                    out.push_str(&format!("decode('{}', 'hex')", "00".repeat(n)));
                    i += 9 + end + 1;
                    continue;
                }
            }
        }
        if starts(i, "MAX(") || starts(i, "MIN(") {
            // SQLite's scalar max(a, b) / min(a, b): PostgreSQL's greatest / least.
            let open = i + 3;
            let (mut depth, mut k, mut comma) = (0i32, open, false);
            while k < bytes.len() {
                match bytes[k] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' if depth == 1 => comma = true,
                    b'\'' => {
                        k += 1;
                        while k < bytes.len() && bytes[k] != b'\'' {
                            k += 1;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            if comma {
                out.push_str(if ub[i + 1] == b'A' { "greatest" } else { "least" });
                i += 3;
                continue;
            }
        }
        if starts(i, "AS REAL)") {
            out.push_str("AS DOUBLE PRECISION)");
            i += 8;
            continue;
        }
        if starts(i, "JSON_EXTRACT(") {
            // json_extract(expr, '$.key')
            let rest = &sql[i + 13..];
            if let Some(comma) = rest.find(", '$.") {
                if let Some(end) = rest[comma + 5..].find("')") {
                    let expr = &rest[..comma];
                    let key = &rest[comma + 5..comma + 5 + end];
                    out.push_str(&format!("(({expr})::json -> '{key}')::text"));
                    i += 13 + comma + 5 + end + 2;
                    continue;
                }
            }
        }
        out.push(b as char);
        // Copy the rest of a multi-byte character untouched.
        if b >= 0x80 {
            let ch = sql[i..].chars().next().unwrap_or(' ');
            out.pop();
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        i += 1;
    }
    if ignore {
        match out.to_ascii_uppercase().rfind(" RETURNING ") {
            Some(at) => out.insert_str(at, " ON CONFLICT DO NOTHING"),
            None => out.push_str(" ON CONFLICT DO NOTHING"),
        }
    }
    // The tree of a profile: PostgreSQL must be told the parameter's type.
    Cow::Owned(out.replace("(SELECT $1 UNION ALL", "(SELECT $1::bigint UNION ALL"))
}

#[cfg(test)]
mod tests {
    use super::pg_dialect;

    #[test]
    fn translates_sqlite_text() {
        assert_eq!(pg_dialect("SELECT a FROM t WHERE x = ?1 AND y = ?2 OR z = ?1"), "SELECT a FROM t WHERE x = $1 AND y = $2 OR z = $1");
        assert_eq!(pg_dialect("VALUES (?, ?, ?)"), "VALUES ($1, $2, $3)");
        assert_eq!(pg_dialect("SELECT '?1 IN m' WHERE a IN m"), "SELECT '?1 IN m' WHERE a IN (SELECT id FROM m)");
        assert_eq!(pg_dialect("WHERE id IN members"), "WHERE id IN members");
        assert_eq!(pg_dialect("INSERT OR IGNORE INTO t(a) VALUES (?1)"), "INSERT INTO t(a) VALUES ($1) ON CONFLICT DO NOTHING");
        assert_eq!(pg_dialect("SELECT ifnull(a, 0), CAST(b AS INTEGER) FROM t WHERE +event = ?1"), "SELECT coalesce(a, 0), CAST(b AS BIGINT) FROM t WHERE event = $1");
        assert_eq!(pg_dialect("SELECT json_extract(body, '$.properties') FROM e"), "SELECT ((body)::json -> 'properties')::text FROM e");
        assert_eq!(pg_dialect("SELECT a + b, 'l''?'"), "SELECT a + b, 'l''?'");
        assert_eq!(pg_dialect("WITH RECURSIVE m(id) AS (SELECT ?1 UNION ALL SELECT 1)"), "WITH RECURSIVE m(id) AS (SELECT $1::bigint UNION ALL SELECT 1)");
        assert_eq!(pg_dialect("SELECT 'é' || ?1"), "SELECT 'é' || $1");
        assert_eq!(pg_dialect("VALUES (zeroblob(2), ?1)"), "VALUES (decode('0000', 'hex'), $1)");
        assert_eq!(pg_dialect("SET c = max(c, ?2), d = min(a, f(b, c)) WHERE x = (SELECT max(y) FROM t)"), "SET c = greatest(c, $2), d = least(a, f(b, $2)) WHERE x = (SELECT max(y) FROM t)".replace("f(b, $2)", "f(b, c)"));
    }
}
