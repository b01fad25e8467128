//! The caller, from the verified token's claims only (API Gateway's JWT
//! authorizer puts them in the request context as strings).

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use ledger_domain::{Actor, CallerKind, OrgId, UserId};

use crate::ApiError;

/// The scope a service token (the product's backend) carries.
pub const SERVICE_SCOPE: &str = "ledger/service";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    User {
        org: OrgId,
        user: UserId,
        admin: bool,
    },
    /// Acts on any organization; names the user it acts for in the body.
    Service {
        client: String,
    },
}

impl Caller {
    pub fn from_request(req: &Request) -> Result<Caller, ApiError> {
        let jwt = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()),
            _ => None,
        }
        .ok_or(ApiError::Unauthenticated)?;
        let claim = |name: &str| jwt.claims.get(name).map(String::as_str);
        let scopes_claim = claim("scope").unwrap_or_default().split_whitespace();
        let is_service = scopes_claim
            .chain(jwt.scopes.iter().flatten().map(String::as_str))
            .any(|s| s == SERVICE_SCOPE);
        if is_service {
            // The service scope is the product's backend's alone: a token
            // that also names a user's organization or role is a user's
            // token that should not carry it, and acts as nobody.
            if claim("org").is_some() || claim("role").is_some() {
                return Err(ApiError::Forbidden(
                    "a token with user claims (org, role) cannot carry the service scope",
                ));
            }
            let client = claim("client_id").or(claim("sub")).unwrap_or("service").to_string();
            return Ok(Caller::Service { client });
        }
        let org = claim("org")
            .and_then(|o| OrgId::parse(o).ok())
            .ok_or(ApiError::Unauthenticated)?;
        let user = claim("sub")
            .and_then(|u| UserId::parse(u).ok())
            .ok_or(ApiError::Unauthenticated)?;
        let admin = match claim("role") {
            Some("admin") => true,
            Some("member") => false,
            _ => return Err(ApiError::Forbidden("the token carries no known role")),
        };
        Ok(Caller::User { org, user, admin })
    }

    /// Who is calling, for telling one caller's requests from another's.
    pub fn identity(&self) -> String {
        match self {
            Caller::User { user, .. } => format!("user:{user}"),
            Caller::Service { client } => format!("service:{client}"),
        }
    }

    /// The organization a route addresses, if this caller may address it. A
    /// user naming another organization learns nothing: 404, as if absent.
    pub fn organization(&self, path_org: &str) -> Result<OrgId, ApiError> {
        let org = OrgId::parse(path_org).map_err(|_| ApiError::NotFound)?;
        match self {
            Caller::Service { .. } => Ok(org),
            Caller::User { org: own, .. } if *own == org => Ok(org),
            Caller::User { .. } => Err(ApiError::NotFound),
        }
    }

    /// Operator actions (renew now): the product's backend only.
    pub fn require_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Service { .. } => Ok(()),
            Caller::User { .. } => Err(ApiError::Forbidden("only the service may do this")),
        }
    }

    pub fn require_admin_or_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Service { .. } | Caller::User { admin: true, .. } => Ok(()),
            Caller::User { .. } => Err(ApiError::Forbidden("only an admin or the service may do this")),
        }
    }

    /// Who the ledger records: a user's own id, or the user a service call
    /// names. A user token may not act for someone else.
    pub fn actor(&self, named_user: Option<&str>) -> Result<Actor, ApiError> {
        match self {
            Caller::Service { .. } => {
                let user = named_user.map(UserId::parse).transpose()?;
                Ok(Actor::service(user))
            }
            Caller::User { user, admin, .. } => {
                if named_user.is_some_and(|u| u != user.as_str()) {
                    return Err(ApiError::Forbidden("a user token acts for its own user only"));
                }
                let caller = if *admin { CallerKind::Admin } else { CallerKind::Member };
                Ok(Actor {
                    user: Some(user.clone()),
                    caller,
                })
            }
        }
    }
}
