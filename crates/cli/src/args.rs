//! Command-line arguments (clap). Parsed once in `main`, then resolved into [`crate::Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// posthuman: buy compute on private transformer models, train, infer, evaluate, verify.
#[derive(Debug, Parser)]
#[command(name = "posthuman", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The Posthuman API (an embedded server or a deployed API Gateway URL).
    #[arg(long, global = true, env = "POSTHUMAN_API", default_value = posthuman_types::DEFAULT_API_URL)]
    pub api: String,
    /// Ethereum JSON-RPC endpoint; by default the one the API advertises.
    #[arg(long, global = true, env = "POSTHUMAN_RPC")]
    pub rpc: Option<String>,
    /// Encrypted keystore file of your wallet.
    #[arg(
        long,
        global = true,
        env = "POSTHUMAN_WALLET",
        default_value = "~/.posthuman/wallet.json"
    )]
    pub wallet: String,
    /// Environment variable holding the keystore's password.
    #[arg(long, global = true, default_value = "POSTHUMAN_WALLET_PASSWORD")]
    pub password_env: String,
    /// Use the hex private key in this environment variable instead of a keystore.
    #[arg(long, global = true)]
    pub key_env: Option<String>,
    /// Machine-readable JSON on stdout instead of text and progress bars.
    #[arg(long, global = true)]
    pub json: bool,
    /// Accept a job's quote (its compute fee) without being asked; needed without a terminal.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, import and inspect your wallet.
    #[command(subcommand)]
    Wallet(WalletCmd),
    /// Publish models and browse the catalogue.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Buy, sell and transfer datatokens.
    #[command(subcommand)]
    Market(MarketCmd),
    /// Run paid train / infer / evaluate jobs and follow them.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Where each of your datatokens came from (derivation rewards by scheme share).
    Rewards,
    /// Verify a job's receipt, its lineage and the order that paid for it, on chain.
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum WalletCmd {
    /// Create a new key and save it encrypted at --wallet.
    Create,
    /// Encrypt the hex key held in an environment variable into --wallet.
    Import {
        /// The environment variable holding the key.
        #[arg(long)]
        from_env: String,
    },
    /// Print your address.
    Address,
    /// ETH, OCEAN and every datatoken you hold.
    Balances,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// Publish an HF-layout directory (config.json, model.safetensors, tokenizer.json).
    Publish(PublishArgs),
    /// The catalogue.
    List,
    /// One model's card, price, lineage, evaluations and receipts.
    Show { nft: String },
    /// The lineage tree from a model up to its root.
    Lineage { nft: String },
    /// Put datatokens of a model you trained on sale on Ocean's fixed-rate exchange (any
    /// Ocean client can then buy them), or change its price, or close the sale.
    Sell(SellArgs),
    /// Edit the card of a model you own (a root you published, a derived model you
    /// trained): its description, your tags and (a root's only) its licence. The model's
    /// Ocean DDO on chain follows.
    Edit(EditArgs),
    /// The lineage royalty waiting in a derived model's vault (OCEAN its orders paid for
    /// its ancestors); with --distribute, pay it out to them by the root's scheme (anyone
    /// may: the vault's `distribute()`, your wallet pays the gas).
    Royalties(RoyaltiesArgs),
}

#[derive(Debug, Args)]
pub struct RoyaltiesArgs {
    /// The derived model (its NFT).
    pub nft: String,
    /// Pay the vault out now (one transaction; none is sent when nothing is waiting).
    #[arg(long)]
    pub distribute: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["description", "tags", "license"])))]
pub struct EditArgs {
    /// The model (its NFT).
    pub nft: String,
    /// The new description (at most 2048 bytes, no control characters but line breaks).
    #[arg(long)]
    pub description: Option<String>,
    /// Your tags, replacing the ones you set before, separated by commas or spaces ("" removes
    /// them): lowercase a-z, 0-9 and inner hyphens, at most 8 (the fixed tags stay).
    #[arg(long)]
    pub tags: Option<String>,
    /// A root's new licence (models derived from it afterwards inherit it; a derived model
    /// keeps its root's): as `models publish --license` takes it ("" names none).
    #[arg(long)]
    pub license: Option<String>,
}

#[derive(Debug, Args)]
pub struct SellArgs {
    /// The derived model (its NFT) whose datatokens you hold as its trainer.
    pub nft: String,
    /// Price of one datatoken in OCEAN (decimal, e.g. 2.5); required unless --close.
    #[arg(long, required_unless_present = "close")]
    pub price: Option<String>,
    /// How many of your datatokens to add to the sale (decimal); 0 only sets the price.
    #[arg(long, default_value = "0")]
    pub amount: String,
    /// Close the sale instead (what is unsold stays reserved for a later sale).
    #[arg(long, conflicts_with_all = ["price"])]
    pub close: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Directory holding config.json, model.safetensors and tokenizer.json.
    pub dir: PathBuf,
    /// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors) over
    /// those weights: the model listed is the base with the adapter merged.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub symbol: String,
    #[arg(long, default_value = "")]
    pub description: String,
    /// The model's licence, which models derived from it inherit: an SPDX identifier
    /// (Apache-2.0, MIT, BSD-3-Clause, CC-BY-4.0, CC-BY-SA-4.0, CC-BY-NC-4.0,
    /// CC-BY-NC-SA-4.0, CC0-1.0) or LicenseRef-NAME for other terms (e.g.
    /// LicenseRef-llama3.2-community). Left out: "proprietary: compute-to-data only".
    #[arg(long)]
    pub license: Option<String>,
    /// Price of one datatoken in OCEAN (decimal, e.g. 2.5).
    #[arg(long)]
    pub price: String,
    /// Datatokens minted per derivation (decimal).
    #[arg(long, default_value = "100")]
    pub reward_total: String,
    /// Reward scheme: the trainer's share in basis points; each earlier trainer gets half.
    #[arg(long, default_value_t = 5000)]
    pub reward_first_bps: u16,
    /// Number of trainers (most recent first) the scheme pays.
    #[arg(long, default_value_t = 4)]
    pub reward_depth: usize,
    /// Lineage royalty in OCEAN (decimal, at most 10): every order of a model derived from
    /// this one pays it to that model's ancestors by the same shares.
    #[arg(long, default_value = "0")]
    pub royalty: String,
}

#[derive(Debug, Subcommand)]
pub enum MarketCmd {
    /// Buy datatokens with OCEAN: from a model's exchange, an exchange id, or a holder's offer.
    Buy {
        /// The model NFT whose datatoken to buy on its listed exchange.
        nft: Option<String>,
        /// A fixed-rate exchange id (bytes32).
        #[arg(long, conflicts_with = "offer")]
        exchange: Option<String>,
        /// A holder's offer on the peer market (see `market sell`). Needs the model NFT (or
        /// --datatoken) you mean to buy: the offer's token is checked against it.
        #[arg(long)]
        offer: Option<String>,
        /// With --offer: the datatoken you mean to buy, when you name no model NFT.
        #[arg(long, requires = "offer", conflicts_with = "nft")]
        datatoken: Option<String>,
        /// Datatokens to buy (decimal).
        #[arg(long, default_value = "1")]
        amount: String,
        /// The most OCEAN (decimal, fees included) to pay; a costlier purchase is refused
        /// before anything is approved.
        #[arg(long)]
        max_cost: Option<String>,
    },
    /// Offer datatokens you hold (e.g. training rewards) for sale on the peer market.
    Sell {
        /// The datatoken to sell.
        datatoken: String,
        /// Price in OCEAN per datatoken (decimal).
        #[arg(long)]
        price: String,
        /// How many to put up for sale (decimal); the market may move that many from you.
        #[arg(long)]
        amount: String,
    },
    /// Send tokens to someone.
    Transfer {
        token: String,
        to: String,
        /// Amount (decimal, 18 decimals).
        amount: String,
    },
}

/// `ROLE:CONTENT` → a chat message (the role is checked on submit, with the other bounds).
fn parse_message(s: &str) -> Result<posthuman_types::ChatMessage, String> {
    let (role, content) =
        s.split_once(':').ok_or_else(|| format!("`{s}` is not ROLE:CONTENT (e.g. user:hi)"))?;
    Ok(posthuman_types::ChatMessage::new(role.trim(), content))
}

/// Sampling flags shared by infer.
#[derive(Debug, Args)]
pub struct InferArgs {
    pub nft: String,
    /// A prompt (repeat for a batch).
    #[arg(long = "prompt", required_unless_present = "messages", conflicts_with = "messages")]
    pub prompts: Vec<String>,
    /// A chat message as ROLE:CONTENT, ROLE one of system, user, assistant (repeat, in
    /// order); the model's chat template renders them and one completion answers.
    #[arg(long = "message", value_parser = parse_message)]
    pub messages: Vec<posthuman_types::ChatMessage>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: u32,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<u32>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop generating once this string appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Fine-tune a model on your data; the result is published as a new model.
    Train {
        nft: String,
        /// Your training text (UTF-8).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 50)]
        steps: u32,
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        #[arg(long, default_value_t = 8)]
        batch: u32,
        #[arg(long, default_value_t = 64)]
        context: u32,
        #[arg(long, default_value_t = 5)]
        warmup: u32,
        #[arg(long, default_value_t = 10)]
        checkpoint_every: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        lora: LoraArgs,
        /// The derived model's name (default: "<parent name> · fine-tune N").
        #[arg(long)]
        name: Option<String>,
        /// The derived model's datatoken symbol (default: "<parent symbol>-FT<N>").
        #[arg(long)]
        symbol: Option<String>,
        /// Submit and return the job id without following it.
        #[arg(long)]
        detach: bool,
    },
    /// Generate text from a model.
    Infer(InferArgs),
    /// Perplexity of a model on your data, against a baseline.
    Evaluate {
        nft: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 128)]
        context: u32,
        #[arg(long, default_value_t = 64)]
        stride: u32,
        /// Score at most this many tokens (0 = all).
        #[arg(long, default_value_t = 0)]
        max_tokens: u64,
        /// A baseline: LABEL=PERPLEXITY, or a model NFT whose latest evaluation to use.
        #[arg(long)]
        baseline: Option<String>,
    },
    /// Your jobs, newest first.
    List,
    /// A job's state and live progress.
    Status { job: String },
    /// A finished job's public outputs and receipt.
    Result { job: String },
    /// Follow a job's progress until it ends.
    Follow { job: String },
}

/// LoRA instead of a full fine-tune (PEFT's settings); given with `--lora-rank`.
#[derive(Debug, Args)]
pub struct LoraArgs {
    /// Train a LoRA adapter of this rank over the frozen model (PEFT's `r`).
    #[arg(long)]
    pub lora_rank: Option<u32>,
    /// PEFT's `lora_alpha` (the branch is scaled by alpha / rank); default 2 × rank.
    #[arg(long, requires = "lora_rank")]
    pub lora_alpha: Option<f64>,
    /// Dropout on the adapter's input while training (PEFT's `lora_dropout`).
    #[arg(long, requires = "lora_rank", default_value_t = 0.0)]
    pub lora_dropout: f64,
    /// Module names to adapt (PEFT's `target_modules`), comma-separated; default: the
    /// attention projections of the model's family (GPT-2 `c_attn`; Llama, Mistral, Qwen
    /// `q_proj,v_proj`).
    #[arg(long, requires = "lora_rank", value_delimiter = ',')]
    pub lora_target: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub job: String,
    /// Moved: the proof-of-learning audit needs the private store, so it is operator tooling
    /// (`posthuman-operator audit`). Kept, hidden, so the old command says where it went.
    #[arg(long, hide = true)]
    pub audit: bool,
    /// Moved with `--audit`.
    #[arg(long, hide = true, requires = "audit")]
    pub data_dir: Option<PathBuf>,
    /// The salt printed when the job was submitted: with --data or --prompt, checks that the
    /// receipt commits to that input. Without it the data binding is not checked (the
    /// receipt names the input only salted, so nobody else can confirm a guess).
    #[arg(long)]
    pub salt: Option<posthuman_types::Hash32>,
    /// The dataset a train or evaluate job ran on (with --salt).
    #[arg(long, requires = "salt", conflicts_with = "prompts")]
    pub data: Option<PathBuf>,
    /// The prompts of an infer job, in order (repeat; with --salt).
    #[arg(long = "prompt", requires = "salt")]
    pub prompts: Vec<String>,
    /// The messages of a chat infer job as ROLE:CONTENT, in order (repeat; with --salt).
    #[arg(long = "message", requires = "salt", conflicts_with_all = ["prompts", "data"], value_parser = parse_message)]
    pub messages: Vec<posthuman_types::ChatMessage>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// A newcomer's first command, with no flags, must reach the embedded server.
    #[test]
    fn default_api_is_where_the_embedded_server_listens() {
        let cli = Cli::try_parse_from(["posthuman", "rewards"]).expect("parses");
        assert_eq!(cli.global.api, format!("http://{}", posthuman_types::DEFAULT_API_LISTEN));
    }

    #[test]
    fn infer_takes_prompts_or_chat_messages() {
        let parse = |args: &[&str]| {
            let mut all = vec!["posthuman", "jobs", "infer", "0xabc"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        let cli = parse(&["--message", "system:be brief", "--message", "user:hi: there"]).unwrap();
        let Command::Jobs(JobsCmd::Infer(a)) = cli.command else { panic!("not infer") };
        assert_eq!(
            a.messages,
            vec![
                posthuman_types::ChatMessage::new("system", "be brief"),
                posthuman_types::ChatMessage::new("user", "hi: there"),
            ]
        );
        assert!(a.prompts.is_empty());
        assert!(parse(&["--prompt", "x"]).is_ok());
        assert!(parse(&[]).is_err(), "a prompt or a message is required");
        assert!(parse(&["--prompt", "x", "--message", "user:hi"]).is_err(), "not both");
        assert!(parse(&["--message", "no role"]).is_err());
    }

    /// Issue 14: a trainer names the model he orders, and sells a model he trained.
    #[test]
    fn train_names_its_model_and_sell_takes_a_price_or_closes() {
        let cli = Cli::try_parse_from([
            "posthuman",
            "jobs",
            "train",
            "0xabc",
            "--data",
            "d.txt",
            "--name",
            "Bob's GPT",
            "--symbol",
            "BOB-1",
        ])
        .unwrap();
        let Command::Jobs(JobsCmd::Train { name, symbol, .. }) = cli.command else {
            panic!("not train")
        };
        assert_eq!((name.as_deref(), symbol.as_deref()), (Some("Bob's GPT"), Some("BOB-1")));
        let sell = |args: &[&str]| {
            let mut all = vec!["posthuman", "models", "sell", "0xabc"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        let Command::Models(ModelsCmd::Sell(a)) =
            sell(&["--price", "2.5", "--amount", "10"]).unwrap().command
        else {
            panic!("not sell")
        };
        assert_eq!((a.price.as_deref(), a.amount.as_str(), a.close), (Some("2.5"), "10", false));
        assert!(sell(&["--close"]).is_ok());
        assert!(sell(&[]).is_err(), "a price or --close is required");
        assert!(sell(&["--close", "--price", "1"]).is_err(), "not both");
    }

    /// Issue 14: anyone pays out a derived model's royalty vault.
    #[test]
    fn royalties_shows_a_vault_and_distributes_on_request() {
        let parse = |extra: &[&str]| {
            let mut all = vec!["posthuman", "models", "royalties"];
            all.extend_from_slice(extra);
            Cli::try_parse_from(all)
        };
        let Command::Models(ModelsCmd::Royalties(a)) = parse(&["0xabc"]).unwrap().command else {
            panic!("not royalties")
        };
        assert_eq!((a.nft.as_str(), a.distribute), ("0xabc", false));
        let Command::Models(ModelsCmd::Royalties(a)) =
            parse(&["0xabc", "--distribute"]).unwrap().command
        else {
            panic!("not royalties")
        };
        assert!(a.distribute);
        assert!(parse(&[]).is_err(), "the model is required");
    }
}
