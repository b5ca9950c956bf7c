//! `confidant campaign`: send an email campaign to an audience from the command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use confidant_core::config::{Config, Role};
use confidant_service::campaigns::{CampaignInput, Localised};
use confidant_service::{Principal, ServiceError};

#[derive(Subcommand)]
pub(crate) enum CampaignCommand {
    /// Send (or, with --dry-run, simulate) a campaign. Sending the same campaign again resumes
    /// it: those who received it are skipped.
    Send(SendArgs),
    /// List the campaigns and their status.
    List,
}

#[derive(Args)]
pub(crate) struct SendArgs {
    /// The audience to send to.
    #[arg(long, value_name = "NAME")]
    audience: String,
    /// The subject line (French and English unless --subject-en is given), with {{variables}}.
    #[arg(long, value_name = "TEXT")]
    subject: String,
    /// The body, plain text with {{variables}} (firstName, recommendations, unsubscribe_url...).
    #[arg(long, value_name = "FILE")]
    body_file: PathBuf,
    /// An English subject; --subject is then the French one.
    #[arg(long, value_name = "TEXT", requires = "body_file_en")]
    subject_en: Option<String>,
    /// An English body; --body-file is then the French one.
    #[arg(long, value_name = "FILE", requires = "subject_en")]
    body_file_en: Option<PathBuf>,
    /// The campaign's name (default: derived from audience, purpose and texts).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The purpose it serves. Default marketing.communications.email.
    #[arg(long, value_name = "PURPOSE")]
    purpose: Option<String>,
    /// Recommended products offered through {{recommendations}}. Default 3.
    #[arg(long, value_name = "N")]
    recommendations: Option<usize>,
    /// Decide who would receive it and who is suppressed, and send nothing.
    #[arg(long)]
    dry_run: bool,
}

fn read(path: &PathBuf) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))
}

/// Exit status: 0 when everything was handed over, 3 when some messages failed (run the same
/// command again to resume), 2 for invalid input.
pub(crate) async fn run(config: Config, cmd: CampaignCommand) -> Result<i32> {
    let app = crate::open_app(config).await?;
    let by = Principal { name: "cli".into(), role: Role::Admin };
    let code = match cmd {
        CampaignCommand::List => {
            for c in app.campaigns().await? {
                println!("{}\t{}\t{}\t{}", c.name, c.status, c.audience, c.purpose);
            }
            0
        }
        CampaignCommand::Send(a) => {
            let body = read(&a.body_file)?;
            let (subject, body) = match (a.subject_en, a.body_file_en) {
                (Some(se), Some(be)) => (
                    Localised::Each([("fr".into(), a.subject), ("en".into(), se)].into_iter().collect()),
                    Localised::Each([("fr".into(), body), ("en".into(), read(&be)?)].into_iter().collect()),
                ),
                _ => (Localised::One(a.subject), Localised::One(body)),
            };
            let input = CampaignInput {
                name: a.name,
                audience: a.audience,
                purpose: a.purpose,
                subject,
                body,
                recommendations: a.recommendations,
                scheduled_at: None,
                trigger: None,
            };
            let outcome = async {
                let c = app.create_campaign(input, &by).await?;
                app.send_campaign(&c.name, a.dry_run, &by).await
            }
            .await;
            match outcome {
                Ok(r) => {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                    eprintln!(
                        "campaign {}: {} sent, {} suppressed, {} failed, {} already sent ({})",
                        r.campaign,
                        r.sent,
                        r.suppressed_total(),
                        r.failed,
                        r.already_sent,
                        r.status
                    );
                    if r.failed > 0 || r.status == "interrupted" {
                        eprintln!("some messages were not handed over; run the same command again to resume");
                        3
                    } else {
                        0
                    }
                }
                Err(ServiceError::InvalidTemplate { field, error }) => {
                    eprintln!("error: {field}: {error}");
                    2
                }
                Err(e @ (ServiceError::NotFound(_) | ServiceError::Invalid { .. } | ServiceError::Conflict(_))) => {
                    eprintln!("error: {e}");
                    2
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    app.store().close().await?;
    Ok(code)
}
