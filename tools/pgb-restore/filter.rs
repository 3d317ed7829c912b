//! `-t`/`-n` as users type them: `-t app.accounts` is schema-qualified,
//! which pg_restore's `-t` is not (it takes a bare table name and `-n` the
//! schema, and restores every listed table of every listed schema). A
//! filter that matches nothing in the dump is an error naming it, never a
//! restore of nothing that reports success.

use pgb_common::error::{Error, Result};

/// One `-t` as typed: `name`, `schema.name`, with `"quoted"` parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Table {
    pub typed: String,
    pub schema: Option<String>,
    pub name: String,
}

/// Splits `s` at dots outside double quotes, unquoting each part (`""` is a
/// quote inside quotes), as PostgreSQL reads a qualified name.
fn parts(s: &str) -> Result<Vec<String>> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    if quoted {
        return Err(Error::Usage(format!("-t {s}: unbalanced double quote")));
    }
    if out.iter().any(String::is_empty) {
        return Err(Error::Usage(format!("-t {s}: an empty name part")));
    }
    Ok(out)
}

pub fn parse_table(s: &str) -> Result<Table> {
    let mut p = parts(s)?;
    match p.len() {
        1 => Ok(Table {
            typed: s.to_string(),
            schema: None,
            name: p.remove(0),
        }),
        2 => {
            let name = p.pop().unwrap();
            Ok(Table {
                typed: s.to_string(),
                schema: p.pop(),
                name,
            })
        }
        _ => Err(Error::Usage(format!(
            "-t {s}: expected TABLE or SCHEMA.TABLE (a database name cannot be given here)"
        ))),
    }
}

/// The `-n` and `-t` arguments for pg_restore that restore exactly the
/// tables asked for, or a usage error when pg_restore cannot: its `-n` and
/// `-t` combine as every listed table in every listed schema, so qualified
/// names must all be of one schema, and are not mixed with bare ones.
pub fn pg_restore_filters(
    tables: &[String],
    schemas: &[String],
) -> Result<(Vec<Table>, Vec<String>, Vec<String>)> {
    let parsed: Vec<Table> = tables
        .iter()
        .map(|t| parse_table(t))
        .collect::<Result<_>>()?;
    let qualified: Vec<&Table> = parsed.iter().filter(|t| t.schema.is_some()).collect();
    if qualified.is_empty() {
        let names = parsed.iter().map(|t| t.name.clone()).collect();
        return Ok((parsed, schemas.to_vec(), names));
    }
    if let Some(bare) = parsed.iter().find(|t| t.schema.is_none()) {
        return Err(Error::Usage(format!(
            "-t {} is schema-qualified and -t {} is not; pg_restore would look for {} only \
             in the schema given: qualify every table or none",
            qualified[0].typed, bare.typed, bare.name
        )));
    }
    let mut in_schemas: Vec<String> = schemas.to_vec();
    for t in &qualified {
        let s = t.schema.clone().unwrap();
        if !in_schemas.contains(&s) {
            in_schemas.push(s);
        }
    }
    if in_schemas.len() > 1 {
        return Err(Error::Usage(format!(
            "-t {} names tables of more than one schema ({}); pg_restore restores every listed \
             table of every listed schema, not just these: restore one schema's tables per run",
            tables.join(" -t "),
            in_schemas.join(", ")
        )));
    }
    let names = parsed.iter().map(|t| t.name.clone()).collect();
    Ok((parsed, in_schemas, names))
}

/// Object kinds pg_restore's `-t` selects, as `pg_restore -l` names them.
const TABLE_KINDS: [&str; 6] = [
    "TABLE DATA",
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "SEQUENCE",
    "FOREIGN TABLE",
];

/// True when a `pg_restore -l` listing holds a table (view, sequence,
/// foreign table) that `t` names. Lines read
/// `ID; TABLEOID OID KIND SCHEMA NAME OWNER`.
pub fn listed(toc: &str, t: &Table) -> bool {
    toc.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| l.split_once("; ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.splitn(3, ' ').nth(2))
        .any(|rest| {
            TABLE_KINDS.iter().any(|k| {
                let Some(obj) = rest.strip_prefix(k).and_then(|r| r.strip_prefix(' ')) else {
                    return false;
                };
                match &t.schema {
                    Some(s) => obj.starts_with(&format!("{s} {} ", t.name)),
                    None => obj
                        .split_once(' ')
                        .is_some_and(|(_, r)| r.starts_with(&format!("{} ", t.name))),
                }
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn qualified_names_become_schema_and_table() {
        let (_, n, t) =
            pg_restore_filters(&strs(&["app.accounts", "app.\"Odd.Name\""]), &[]).unwrap();
        assert_eq!(n, strs(&["app"]));
        assert_eq!(t, strs(&["accounts", "Odd.Name"]));
        let (_, n, t) = pg_restore_filters(&strs(&["accounts"]), &strs(&["app"])).unwrap();
        assert_eq!((n, t), (strs(&["app"]), strs(&["accounts"])));
        for bad in [
            &["app.accounts", "public.users"][..],
            &["app.accounts", "users"][..],
            &["db.app.accounts"][..],
            &["app."][..],
            &["\"app"][..],
        ] {
            let e = pg_restore_filters(&strs(bad), &[]).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad:?}: {e}");
        }
        let e = pg_restore_filters(&strs(&["app.accounts"]), &strs(&["public"])).unwrap_err();
        assert!(e.to_string().contains("more than one schema"), "{e}");
    }

    #[test]
    fn the_listing_says_whether_a_table_is_in_the_dump() {
        let toc = ";\n; Archive created at 2026-11-21\n;\n\
                   215; 1259 16390 TABLE app accounts postgres\n\
                   3350; 0 16390 TABLE DATA app accounts postgres\n\
                   216; 1259 16391 MATERIALIZED VIEW public totals postgres\n";
        let t = |s: &str| parse_table(s).unwrap();
        assert!(listed(toc, &t("app.accounts")));
        assert!(listed(toc, &t("accounts")));
        assert!(listed(toc, &t("totals")));
        assert!(!listed(toc, &t("public.accounts")));
        assert!(!listed(toc, &t("account")));
        assert!(!listed(toc, &t("postgres")));
    }
}
