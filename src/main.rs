//! The `agentry` command: `serve`, `keys create|generate`, `migrate`.

use clap::Parser;

use agentry::{
    admin,
    auth::{Scopes, keys},
    config::{Cli, Command, KeysCommand},
    error::Result,
    server::{Server, shutdown_signal},
    store::Db,
};

fn main() {
    agentry::telemetry::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentry: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli.command)) {
        eprintln!("agentry: {e}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => {
            let settings = args.settings()?;
            let server = Server::bind(&settings).await?;
            if let Some(secret) = server.bootstrap_secret() {
                if settings.bootstrap_key.is_some() {
                    println!(
                        "Created workspace \"default\" with the admin key from AGENTRY_BOOTSTRAP_KEY."
                    );
                } else {
                    println!("Created workspace \"default\". Its admin key (shown once): {secret}");
                }
            }
            tracing::info!(grpc = %server.grpc_addr(), http = %server.http_addr(), "agentry serving");
            server.run(shutdown_signal()).await
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    db,
                    workspace,
                    scopes,
                    name,
                },
        } => {
            let scopes: Scopes = scopes.parse()?;
            let db = Db::connect(&db.database_url()?).await?;
            let ws = admin::ensure_workspace(db.writer(), &workspace).await?;
            let (_, secret) = admin::keys::create(db.writer(), &ws.id, &name, scopes, None).await?;
            println!("{secret}");
            db.close().await;
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Generate,
        } => {
            println!("{}", keys::generate());
            Ok(())
        }
        Command::Migrate(db) => {
            let db = Db::connect(&db.database_url()?).await?;
            db.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
    }
}
