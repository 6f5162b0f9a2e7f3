//! `--geoip-db`: a MaxMind-format database (GeoLite2/GeoIP2 Country or City, or anything with
//! `country.iso_code` and `continent.code`) that tells the country and continent of a viewer's
//! address; the operator's region map turns those into a region (`control::routing::client`).
//!
//! Read into memory once at start-up: a file that is not a MaxMind database stops the node with
//! an error naming the flag, rather than routing every viewer by the node's region in silence.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use control::routing::client::{GeoAnswer, GeoLookup};
use serde::Deserialize;

/// An opened database. Equal when opened from the same path (the config compares by flags).
#[derive(Clone)]
pub struct GeoIpDb {
    path: PathBuf,
    reader: Arc<maxminddb::Reader<Vec<u8>>>,
}

impl std::fmt::Debug for GeoIpDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIpDb").field("path", &self.path).finish_non_exhaustive()
    }
}

impl PartialEq for GeoIpDb {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for GeoIpDb {}

/// The fields read from a record; everything else in it is ignored.
#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    country: Option<Code>,
    #[serde(default)]
    continent: Option<Code>,
}

#[derive(Deserialize)]
struct Code {
    #[serde(default)]
    iso_code: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl GeoIpDb {
    /// Open and check the file; the error says why it is not a usable database.
    pub fn open(path: &Path) -> Result<GeoIpDb, String> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| format!("not a MaxMind DB file: {e}"))?;
        Ok(GeoIpDb { path: path.to_owned(), reader: Arc::new(reader) })
    }
}

impl GeoLookup for GeoIpDb {
    fn lookup(&self, ip: IpAddr) -> Option<GeoAnswer> {
        // Not found, an IPv6 address in an IPv4 database, or a record of another shape: no answer.
        let record: Record = self.reader.lookup(ip).ok()?.decode().ok()??;
        let country = record.country.and_then(|c| c.iso_code);
        let continent = record.continent.and_then(|c| c.code);
        (country.is_some() || continent.is_some()).then_some(GeoAnswer { country, continent })
    }
}
