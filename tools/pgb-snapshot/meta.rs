//! What the server says about itself, recorded with every artifact.

use pgb_common::error::{Error, Result};
use pgb_common::pg::Psql;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub database: String,
    pub version: String,
    pub system_identifier: Option<String>,
    pub cluster_name: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub wal_segment_size: u64,
    pub in_recovery: bool,
    pub extensions: Vec<Value>,
    pub tablespaces: Vec<Value>,
}

impl ServerInfo {
    /// The server's major version, and why a program of it is needed, for
    /// picking the PostgreSQL programs that match it.
    pub fn need(&self) -> Result<(u32, String)> {
        let major = pgb_common::pgbin::major_of(&self.version).ok_or_else(|| {
            Error::msg(format!("cannot read the server version {:?}", self.version))
        })?;
        Ok((major, format!("the server runs {}", self.version)))
    }

    /// The cluster label: the operator's, else cluster_name, else the system
    /// identifier.
    pub fn label(&self, given: Option<&str>) -> String {
        match given {
            Some(l) => l.to_string(),
            None if !self.cluster_name.is_empty() => self.cluster_name.clone(),
            None => self
                .system_identifier
                .clone()
                .unwrap_or_else(|| "cluster".into()),
        }
    }

    pub fn locale(&self) -> Value {
        json!({"encoding": self.encoding, "collate": self.collate, "ctype": self.ctype})
    }
}

pub fn query(psql: &mut Psql) -> Result<ServerInfo> {
    let rows = psql.query(
        "SELECT current_database(), current_setting('server_version'),
                CASE WHEN has_function_privilege('pg_control_system()', 'execute')
                     THEN (SELECT system_identifier::text FROM pg_control_system()) END,
                current_setting('cluster_name'), pg_encoding_to_char(d.encoding),
                d.datcollate, d.datctype,
                (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
                pg_is_in_recovery()
           FROM pg_database d WHERE d.datname = current_database()",
    )?;
    let r = rows
        .into_iter()
        .next()
        .filter(|r| r.len() == 9)
        .ok_or_else(|| Error::msg("server information: unexpected answer from the server"))?;
    let extensions = psql
        .query(
            "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e
               JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1",
        )?
        .into_iter()
        .map(|r| json!({"name": r[0], "version": r[1], "schema": r[2]}))
        .collect();
    let tablespaces = psql
        .query("SELECT spcname, oid, pg_tablespace_location(oid) FROM pg_tablespace ORDER BY 1")?
        .into_iter()
        .map(|r| json!({"name": r[0], "oid": r[1].parse::<u64>().unwrap_or(0), "location": r[2]}))
        .collect();
    Ok(ServerInfo {
        database: r[0].clone(),
        version: r[1].split_whitespace().next().unwrap_or("").to_string(),
        system_identifier: Some(r[2].clone()).filter(|s| !s.is_empty()),
        cluster_name: r[3].clone(),
        encoding: r[4].clone(),
        collate: r[5].clone(),
        ctype: r[6].clone(),
        wal_segment_size: r[7].parse().unwrap_or(16 << 20),
        in_recovery: r[8] == "t",
        extensions,
        tablespaces,
    })
}
