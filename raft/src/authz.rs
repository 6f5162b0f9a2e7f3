//! Who may ask what of a member: the authorisation of each cluster request by the caller's roles.
//!
//! The caller is the local admin socket (full rights: filesystem permissions guard it), a member
//! named by its certificate (node id and enrolment roles, see [`crate::tls::cert_subject`]), or an
//! anonymous peer that may only enrol. Control nodes administer the cluster; other nodes get what
//! their job needs: an edge reports viewers and reads what it serves (its own replica, the read
//! index, the status), an ingest node also opens and closes broadcast sessions. Neither may change
//! users or keys, remove or revoke nodes, send Raft traffic, nor dump the records.
//!
//! Pure functions: the listener calls them, unit tests drive them without sockets. Revocation is
//! checked separately against the catalog (see [`crate::state::access`]).

use crate::command::Command;
use crate::rpc::Request;
use crate::tls::CertSubject;

/// The ingest role's name (it records the sessions it starts).
pub const INGEST_ROLE: &str = "ingest";

/// The roles that package or transcode media, and so may subscribe to relayed tracks.
pub const ORIGIN_ROLE: &str = "origin";
pub const TRANSCODE_ROLE: &str = "transcode";

/// Whether a member may subscribe to the media tracks this node relays: only a certificate that
/// names the origin or transcode role (or one from before roles were recorded). Control nodes
/// are not let in by their role alone: the relay carries broadcasters' media, which only the
/// nodes that package or transcode it need.
pub fn may_subscribe(subject: &CertSubject) -> Result<(), Refused> {
    let allowed = match &subject.roles {
        None => true,
        Some(roles) => roles.iter().any(|r| r == ORIGIN_ROLE || r == TRANSCODE_ROLE),
    };
    if allowed {
        Ok(())
    } else {
        Err(Refused(format!(
            "relay subscription from node {}: its certificate names neither the origin nor the transcode role",
            subject.node_id
        )))
    }
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The local admin socket.
    Admin,
    /// A member, by its certificate.
    Member(CertSubject),
    /// A peer without a certificate (enrolment connections).
    Anonymous,
}

impl Caller {
    /// Whether this caller may do anything a control node may.
    pub fn is_control(&self) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Member(subject) => subject.is_control(),
            Caller::Anonymous => false,
        }
    }
}

/// Why a request was refused, for the log and the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Whether `caller` may send `request`.
pub fn authorize(caller: &Caller, request: &Request) -> Result<(), Refused> {
    let subject = match caller {
        Caller::Admin => return Ok(()),
        Caller::Anonymous => {
            return match request {
                Request::Enrol(_) => Ok(()),
                other => Err(Refused(format!("{}: unauthenticated peers may only enrol", other.kind()))),
            }
        }
        Caller::Member(subject) => subject,
    };
    let refuse = |why: &str| Err(Refused(format!("{} from node {}: {why}", request.kind(), subject.node_id)));
    if subject.is_control() {
        // Enrolment is for peers without a certificate; a member asking is confused or replaying.
        return match request {
            Request::Enrol(_) => refuse("members do not enrol"),
            _ => Ok(()),
        };
    }
    match request {
        Request::Status | Request::ReadIndex => Ok(()),
        Request::Join { node_id, .. } if *node_id == subject.node_id => Ok(()),
        Request::Join { .. } => refuse("a node may only ask to join for itself"),
        Request::Propose(command) => command_allowed(subject, command).map_err(|why| Refused(why.0)),
        Request::AppendEntries(_) | Request::Vote(_) | Request::InstallSnapshot(_) => {
            refuse("only control nodes take part in Raft")
        }
        Request::Dump => refuse("only control nodes may dump the records"),
        Request::Remove { .. } | Request::Revoke { .. } | Request::Partition { .. } => {
            refuse("only control nodes administer the cluster")
        }
        Request::Enrol(_) => refuse("members do not enrol"),
    }
}

/// Whether a member without the control role may propose `command`.
pub fn command_allowed(subject: &CertSubject, command: &Command) -> Result<(), Refused> {
    if subject.is_control() {
        return Ok(());
    }
    let id = subject.node_id;
    let refuse = |why: String| Err(Refused(format!("node {id} may not propose {why}")));
    match command {
        Command::Noop { .. } => Ok(()),
        Command::UpsertNode(info) if info.id != id => refuse(format!("a directory entry for node {}", info.id)),
        Command::UpsertNode(info) => match info.roles.iter().find(|r| !subject.has_role(r)) {
            Some(role) => refuse(format!("a directory entry with role {role} (not in its certificate)")),
            None => Ok(()),
        },
        Command::ReportViewers(sample) if sample.node_id == id => Ok(()),
        Command::ReportViewers(sample) => refuse(format!("viewer counts for node {}", sample.node_id)),
        Command::StartSession(_)
        | Command::EndSession { .. }
        | Command::SetSessionRenditions { .. }
        | Command::ReportHealth { .. }
            if subject.has_role(INGEST_ROLE) =>
        {
            Ok(())
        }
        // The node that records a broadcast (an origin, or an all-in-one ingest node) writes its
        // entry, and its retention sweep deletes and forgets what it holds.
        Command::PutRecording(recording) if recording.node_id != id => {
            refuse(format!("a recording held by node {}", recording.node_id))
        }
        Command::PutRecording(_) | Command::DeleteRecording { .. } | Command::ForgetRecording { .. }
            if subject.has_role(ORIGIN_ROLE) || subject.has_role(INGEST_ROLE) =>
        {
            Ok(())
        }
        // A transcode node running a channel's ladder records the renditions it publishes.
        Command::SetSessionRenditions { .. } if subject.has_role(TRANSCODE_ROLE) => Ok(()),
        // A node may drain itself (what `bitriver cluster drain` runs on each host of a rolling
        // upgrade); draining another node is for control nodes and admins.
        Command::SetDraining { node_id, .. } if *node_id == id => Ok(()),
        Command::ReportLoad(report) if report.node_id == id => Ok(()),
        Command::ReportLoad(report) => refuse(format!("a load report for node {}", report.node_id)),
        Command::RenewIngestLeases { holder, .. } if *holder == id && subject.has_role(INGEST_ROLE) => Ok(()),
        Command::RenewIngestLeases { holder, .. } => refuse(format!("lease renewals for node {holder}")),
        Command::EndIngestSession { .. } if subject.has_role(INGEST_ROLE) => Ok(()),
        Command::Batch(commands) => commands.iter().try_for_each(|c| command_allowed(subject, c)),
        other => refuse(format!("{} (control nodes only)", command_name(other))),
    }
}

/// The variant name of a command, for refusals (its fields may hold secrets such as hashes).
fn command_name(command: &Command) -> String {
    let debug = format!("{command:?}");
    debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("command").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeInfo, User, ViewerSample};

    fn member(id: u64, roles: &[&str]) -> Caller {
        Caller::Member(CertSubject { node_id: id, roles: Some(roles.iter().map(|r| r.to_string()).collect()) })
    }

    fn user() -> Command {
        Command::CreateUser(User {
            id: "u".into(),
            display_name: "U".into(),
            email: "u@example.com".into(),
            roles: vec!["admin".into()],
            password_hash: Some("secret-hash".into()),
            created_at: 0,
        })
    }

    #[test]
    fn an_edge_reports_viewers_but_cannot_change_users_dump_or_vote() {
        let edge = member(4, &["edge"]);
        let viewers = |node_id| {
            Command::ReportViewers(ViewerSample {
                channel_id: "c".into(),
                node_id,
                viewers: 1,
                at: 0,
                watched_seconds: vec![],
            })
        };
        authorize(&edge, &Request::Propose(viewers(4))).unwrap();
        authorize(&edge, &Request::Status).unwrap();
        authorize(&edge, &Request::ReadIndex).unwrap();
        authorize(&edge, &Request::Join { node_id: 4, addr: "a".into(), may_vote: false }).unwrap();
        let refused = authorize(&edge, &Request::Propose(user())).unwrap_err();
        assert!(refused.0.contains("CreateUser") && !refused.0.contains("secret-hash"), "{refused}");
        for request in [
            Request::Propose(viewers(5)),
            Request::Propose(Command::Batch(vec![viewers(4), user()])),
            Request::Propose(Command::DeleteUser { id: "u".into() }),
            Request::Propose(Command::SetStreamKey { channel_id: "c".into(), stream_key_hash: "h".into(), at: 0 }),
            Request::Propose(Command::RevokeNode { node_id: 1, at: 0 }),
            Request::Dump,
            Request::Remove { node_id: 1 },
            Request::Revoke { node_id: 1 },
            Request::Join { node_id: 9, addr: "a".into(), may_vote: true },
            Request::Vote(openraft::raft::VoteRequest::new(openraft::Vote::new(9, 4), None)),
        ] {
            assert!(authorize(&edge, &request).is_err(), "an edge was allowed {request:?}");
        }
    }

    #[test]
    fn a_transcode_node_names_the_renditions_it_publishes_and_nothing_else() {
        let renditions = Command::SetSessionRenditions { session_id: "s".into(), renditions: vec!["source".into()] };
        let end = Command::EndSession { channel_id: "c".into(), ended_at: 0, peak_concurrent: None };
        authorize(&member(6, &["transcode"]), &Request::Propose(renditions.clone())).unwrap();
        assert!(authorize(&member(6, &["transcode"]), &Request::Propose(end)).is_err());
        assert!(authorize(&member(4, &["edge"]), &Request::Propose(renditions)).is_err());
    }

    #[test]
    fn directory_entries_cannot_claim_roles_beyond_the_certificate() {
        let info = |id, roles: &[&str]| {
            Command::UpsertNode(NodeInfo {
                id,
                region: "r".into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                addresses: vec![],
                load: Default::default(),
                updated_at: 0,
            })
        };
        let edge = member(4, &["edge"]);
        authorize(&edge, &Request::Propose(info(4, &["edge"]))).unwrap();
        assert!(authorize(&edge, &Request::Propose(info(4, &["edge", "control"]))).is_err());
        assert!(authorize(&edge, &Request::Propose(info(5, &["edge"]))).is_err());
    }

    #[test]
    fn nodes_report_their_own_load_and_renew_only_their_own_ingest_leases() {
        let load = |node_id| {
            Command::ReportLoad(crate::load::LoadReport {
                node_id,
                cpu_permille: 0,
                egress_bps: 0,
                streams: 0,
                connections: 0,
                at: 0,
            })
        };
        let renew = |holder| Command::RenewIngestLeases { holder, leases: vec![], at: 0 };
        let end = Command::EndIngestSession { channel_id: "c".into(), session_id: "s".into(), ended_at: 0 };
        let (edge, ingest) = (member(4, &["edge"]), member(5, &["ingest"]));
        authorize(&edge, &Request::Propose(load(4))).unwrap();
        authorize(&ingest, &Request::Propose(renew(5))).unwrap();
        authorize(&ingest, &Request::Propose(end.clone())).unwrap();
        authorize(&edge, &Request::Propose(Command::SetDraining { node_id: 4, draining: true })).unwrap();
        for (caller, command) in [
            (&edge, load(5)),
            (&edge, renew(4)),
            (&ingest, renew(4)),
            (&edge, end),
            (&ingest, Command::SetDraining { node_id: 1, draining: true }),
            (&ingest, Command::ExpireIngestLease { channel_id: "c".into(), version: 1 }),
        ] {
            assert!(authorize(caller, &Request::Propose(command.clone())).is_err(), "allowed {command:?}");
        }
    }

    #[test]
    fn control_admin_ingest_and_anonymous() {
        let end = Command::EndSession { channel_id: "c".into(), ended_at: 0, peak_concurrent: None };
        authorize(&member(2, &["ingest", "origin"]), &Request::Propose(end.clone())).unwrap();
        assert!(authorize(&member(2, &["edge"]), &Request::Propose(end)).is_err());
        assert!(authorize(&member(2, &["ingest"]), &Request::Propose(user())).is_err());
        for caller in [member(1, &["control"]), member(1, &[]), Caller::Admin] {
            authorize(&caller, &Request::Propose(user())).unwrap();
            authorize(&caller, &Request::Dump).unwrap();
        }
        let legacy = Caller::Member(CertSubject { node_id: 3, roles: None });
        authorize(&legacy, &Request::Dump).unwrap();
        assert!(authorize(&Caller::Anonymous, &Request::Status).is_err());
        assert!(authorize(&Caller::Anonymous, &Request::Propose(Command::Noop { payload: vec![] })).is_err());
    }

    #[test]
    fn only_origin_and_transcode_certificates_may_subscribe_to_relayed_media() {
        let subject =
            |roles: &[&str]| CertSubject { node_id: 7, roles: Some(roles.iter().map(|r| r.to_string()).collect()) };
        may_subscribe(&subject(&["origin"])).unwrap();
        may_subscribe(&subject(&["edge", "transcode"])).unwrap();
        for roles in [&["edge"][..], &["ingest"], &["control"], &["control", "ingest", "edge"]] {
            let refused = may_subscribe(&subject(roles)).unwrap_err();
            assert!(refused.0.contains("node 7"), "{refused}");
        }
        may_subscribe(&CertSubject { node_id: 1, roles: None }).unwrap();
    }
}
