# services.taominer: the NixOS module.
#
# One definition of the units: the services are the package's own unit files (units/, installed
# by the flake's package with store paths), so their hardening, watchdog and restart policy are
# exactly what units/ says and what the systemd boot test runs. The module adds, as drop-ins,
# only what it alone knows: which daemons miner.target starts, the credentials (hotkey, HF token:
# paths as strings, never copied to the store), a restart when the rendered miner.toml changes,
# and the firewall for the axon; with trainer.engine = "external", the engine's [trainer.external]
# (by default torchrun + the packaged reference recipe, recipes/fsdp/) and what its processes need
# beyond the trainer's sandbox (netlink, the checkpoint directory, RDMA devices). miner.toml is rendered from `settings` (RFC 42) with
# pkgs.formats.toml; the keys users set most are typed options, the rest is free-form.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption types;
  cfg = config.services.taominer;
  settingsFormat = pkgs.formats.toml { };
  # TOML has no null: unset typed options are left out (the daemons' defaults apply).
  configFile = settingsFormat.generate "miner.toml"
    (lib.filterAttrsRecursive (_: v: v != null) cfg.settings);
  parts = [ "publisher" "committer" "trainer" "predictor" ];
  enabled = lib.filter (p: cfg.${p}.enable) parts;
  offline = cfg.settings.miner.offline;
  gpuDaemons = lib.filter (p: lib.elem p [ "trainer" "predictor" ]) enabled;
  nvidiaConfigured =
    lib.elem "nvidia" (config.services.xserver.videoDrivers or [ ])
    || (config.hardware.nvidia.datacenter.enable or false);
  axonPort = lib.toInt (lib.last (lib.splitString ":" cfg.settings.predictor.listen));
  # Which credentials each daemon loads (the unit files name the same, at /etc/taominer/…).
  credentials = part:
    lib.optional (lib.elem part [ "committer" "predictor" ] && cfg.hotkeyFile != null)
      "hotkey:${cfg.hotkeyFile}"
    ++ lib.optional (lib.elem part [ "publisher" "trainer" ] && cfg.hfTokenFile != null) "hf-token:${cfg.hfTokenFile}";
  absolutePath = types.nullOr (types.strMatching "/.*");
  ext = cfg.trainer.external;
  external = cfg.trainer.enable && cfg.trainer.engine == "external";
  # [trainer.external] as the daemon reads it (docs/configuration.md); unset keys left out.
  externalSettings = lib.filterAttrs (_: v: v != null) {
    command = ext.command;
    workdir = ext.workdir;
    environment = ext.environment;
    checkpoint_dir = ext.checkpointDir;
    complete_marker = ext.completeMarker;
    settle_seconds = ext.settleSeconds;
    resume_flag = ext.resumeFlag;
    metrics_file = ext.metricsFile;
    stop_grace_seconds = ext.stopGraceSeconds;
  };
  recipe = "${cfg.package}/share/taominer/recipes/fsdp/train.py";
  # What an external engine needs beyond the trainer unit's sandbox (units/miner-trainer.service:
  # the NVIDIA device nodes are already allowed, /dev/shm stays writable under ProtectSystem=strict).
  externalService = {
    # The daemon stops the engine (SIGTERM, stopGraceSeconds, SIGKILL) before it exits itself.
    TimeoutStopSec = "${toString (ext.stopGraceSeconds + 30)}s";
    # gloo and NCCL list network interfaces (getifaddrs) through netlink; added to the unit's list.
    RestrictAddressFamilies = [ "AF_NETLINK" ];
    # Outside the state directory the checkpoints would be read-only (ProtectSystem=strict).
    ReadWritePaths = [ ext.checkpointDir ] ++ lib.optional (ext.metricsFile != null) (dirOf ext.metricsFile);
  } // lib.optionalAttrs ext.rdma {
    # NCCL over InfiniBand/RoCE: the verbs and management devices, the connection manager, and
    # registered (pinned) memory beyond the default 8 MiB lock limit.
    DeviceAllow = [ "char-infiniband_verbs rw" "char-infiniband_mad rw" "/dev/infiniband/rdma_cm rw" ];
    LimitMEMLOCK = "infinity";
  };
  # A key that moved to another section: setting it fails evaluation naming the new key.
  movedTo = new: mkOption {
    type = types.nullOr (types.addCheck types.anything (_: false) // { description = "moved to ${new}"; });
    default = null;
    visible = false;
    description = "Moved to settings.${new}.";
  };
  section = options: mkOption {
    type = types.submodule { freeformType = settingsFormat.type; inherit options; };
    default = { };
  };
in
{
  options.services.taominer = {
    enable = mkEnableOption "taominer, the Bittensor miner appliance";
    package = lib.mkPackageOption pkgs "taominer" {
      extraDescription = "The flake's module sets it to the flake's package (`.#cuda` when `cuda` is on).";
    };
    cuda = mkEnableOption "the CUDA build (candle CUDA kernels, the ONNX Runtime CUDA execution provider) and GPU device access for the trainer and predictor";
    openFirewall = mkEnableOption "the predictor's axon port (settings.predictor.listen) in the firewall";

    publisher.enable = mkOption { type = types.bool; default = true; description = "Run the publisher (staging, hashing, Hub uploads)."; };
    committer.enable = mkOption { type = types.bool; default = true; description = "Run the committer (chain commitments, metagraph)."; };
    trainer.enable = mkEnableOption "the trainer daemon";
    trainer.engine = mkOption {
      type = types.enum [ "candle" "external" ];
      default = "candle";
      description = "Who trains: the daemon itself (candle), or an external engine it supervises (`trainer.external`: torchrun + FSDP by default, the reference recipe recipes/fsdp/), whose checkpoints it scores and hands on.";
    };
    trainer.external = {
      python = mkOption {
        type = types.package;
        default = pkgs.python3.withPackages (ps: [ (if cfg.cuda then ps.torchWithCuda else ps.torch) ps.transformers ps.safetensors ps.numpy ]);
        defaultText = lib.literalExpression "pkgs.python3.withPackages (ps: [ (if cuda then ps.torchWithCuda else ps.torch) ps.transformers ps.safetensors ps.numpy ])";
        description = "The Python environment of the engine (torchrun, torch, transformers); give your own to pin versions.";
      };
      nprocPerNode = mkOption {
        type = types.ints.positive;
        default = 1;
        example = 8;
        description = "Ranks on this machine (torchrun's --nproc-per-node): one per GPU.";
      };
      torchrunArgs = mkOption {
        type = types.listOf types.str;
        default = [ "--standalone" ];
        example = [ "--nnodes" "2" "--rdzv-backend" "c10d" "--rdzv-id" "sn9" "--rdzv-endpoint" "10.0.0.1:29500" ];
        description = "torchrun's arguments before --nproc-per-node: --standalone on one machine, the rendezvous for several (recipes/fsdp/README.md).";
      };
      recipeArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--max-steps" "20000" "--batch-size" "8" "--lr" "3e-4" ];
        description = "Flags of the reference recipe (`train.py --help`), appended to the default command.";
      };
      command = mkOption {
        type = types.nonEmptyListOf types.str;
        default = [ "${ext.python}/bin/torchrun" ] ++ ext.torchrunArgs
          ++ [ "--nproc-per-node" (toString ext.nprocPerNode) recipe ] ++ ext.recipeArgs;
        defaultText = lib.literalExpression ''[ "''${python}/bin/torchrun" ] ++ torchrunArgs ++ [ "--nproc-per-node" nprocPerNode "''${package}/share/taominer/recipes/fsdp/train.py" ] ++ recipeArgs'';
        description = "The engine's argv (no shell); the daemon adds its environment (TAOMINER_*) and, on resume, `resumeFlag` and the checkpoint's path.";
      };
      workdir = mkOption { type = absolutePath; default = null; description = "The engine's working directory; default the trainer's state directory."; };
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = { NCCL_DEBUG = "WARN"; NCCL_SOCKET_IFNAME = "eth0"; };
        description = "Variables added to the engine's environment.";
      };
      checkpointDir = mkOption {
        type = types.strMatching "/.*";
        default = "/var/lib/taominer/trainer/external/checkpoints";
        description = "Where the engine writes its checkpoints (one directory each); created 0750 taominer-trainer:taominer, so the publisher can read them. On several machines: a shared filesystem.";
      };
      completeMarker = mkOption { type = types.nullOr types.str; default = "COMPLETE"; description = "File the engine writes last into a finished checkpoint; null: a checkpoint counts once its files have not changed for settleSeconds."; };
      settleSeconds = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Without a marker: seconds a checkpoint's files must stay unchanged; default the daemon's."; };
      resumeFlag = mkOption { type = types.nullOr types.str; default = "--resume"; description = "The flag that tells the engine which checkpoint to resume from; null: none."; };
      metricsFile = mkOption { type = absolutePath; default = null; description = "The JSON-lines file the engine appends (step, loss, tokens_per_second); default in the trainer's state directory."; };
      stopGraceSeconds = mkOption {
        type = types.ints.positive;
        default = 30;
        description = "Seconds between SIGTERM and SIGKILL to the engine's process group on Pause and stop (its last checkpoint write must fit); the unit's TimeoutStopSec is this plus 30.";
      };
      rdma = mkEnableOption "InfiniBand/RoCE device access (/dev/infiniband) and unlimited locked memory for NCCL across machines";
    };
    predictor.enable = mkEnableOption "the predictor daemon (the axon)";

    operators = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "alice" ];
      description = "Users put in the group taominer-ops, which the D-Bus policy lets call minerctl's actions (publish, train start/pause, predictor reload, MakePublic); everyone in it or in taominer may read status.";
    };

    hotkeyFile = mkOption {
      type = absolutePath;
      default = null;
      example = "/run/keys/taominer-hotkey";
      description = "The hotkey keyfile (as bittensor_wallet writes it), a path string so the key never enters the Nix store; given to the committer and the predictor as the systemd credential `hotkey`.";
    };
    hfTokenFile = mkOption {
      type = absolutePath;
      default = null;
      example = "/run/keys/hf-token";
      description = "File with the Hugging Face token, a path string so it never enters the Nix store; given to the publisher and the trainer as the systemd credential `hf-token` (settings.hub.token_file is the other way, for a file the daemons' users can read).";
    };

    settings = mkOption {
      description = "miner.toml (docs/configuration.md lists every key). The keys below are typed; any other key passes through.";
      default = { };
      type = types.submodule {
        freeformType = settingsFormat.type;
        options.miner = section {
          offline = mkOption { type = types.bool; default = true; description = "No Hub, no chain: commitments go to a local ledger."; };
          profile = mkOption {
            type = types.enum [ "pretraining" "finetuning" "coldint" "soundsright" "bitmind" ];
            default = "pretraining";
            description = "Which subnet's formats the miner speaks.";
          };
          netuid = mkOption { type = types.nullOr types.ints.u16; default = null; description = "Subnet id; default: the profile's."; };
          competition = mkOption { type = types.nullOr types.str; default = null; description = "Default competition id; default: the profile's current one."; };
          chain_endpoint = mkOption { type = types.nullOr types.str; default = null; example = "wss://entrypoint-finney.opentensor.ai:443"; description = "Subtensor WebSocket endpoint."; };
          hotkey_ss58 = mkOption { type = types.nullOr types.str; default = null; description = "The hotkey's SS58 address (required online)."; };
        };
        options.publisher = section {
          repo = mkOption { type = types.nullOr types.str; default = null; example = "alice/sn9-model"; description = "Hugging Face repo id (required online)."; };
          # Moved to [hub] and [retry]: the daemons refuse them (exit 78); say so at evaluation.
          endpoint = movedTo "hub.endpoint";
          allow_insecure = movedTo "hub.allow_insecure";
          token_file = movedTo "hub.token_file";
          retry_initial_ms = movedTo "retry.initial_ms";
          retry_max_ms = movedTo "retry.max_ms";
        };
        options.hub = section {
          endpoint = mkOption { type = types.nullOr types.str; default = null; example = "https://huggingface.co"; description = "The Hugging Face Hub's base URL (publisher and trainer); default https://huggingface.co. Must be https:// unless hub.allow_insecure."; };
        };
        options.retry = section {
          initial_ms = mkOption { type = types.nullOr types.ints.positive; default = null; description = "First retry delay in ms (publisher and committer); default 250."; };
          max_ms = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Longest retry delay in ms; default 30000."; };
        };
        options.trainer = section {
          device = mkOption { type = types.nullOr (types.strMatching "cpu|cuda|cuda:[0-9]+"); default = null; example = "cuda:0"; description = "cpu, cuda or cuda:N (CUDA needs services.taominer.cuda); default cpu."; };
          start = mkOption { type = types.nullOr (types.enum [ "scratch" "model-dir" "uid" "best" ]); default = null; description = "Where the first weights come from; default scratch."; };
        };
        options.predictor = section {
          listen = mkOption { type = types.str; default = "0.0.0.0:8091"; description = "Where the axon listens."; };
          device = mkOption { type = types.nullOr (types.strMatching "cpu|cuda|cuda:[0-9]+"); default = null; example = "cuda"; description = "cpu, cuda or cuda:N (CUDA needs services.taominer.cuda); default cpu."; };
          output = mkOption { type = types.nullOr (types.enum [ "logit" "probability" ]); default = null; description = "What the model outputs; default logit."; };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = offline || !(cfg.committer.enable || cfg.predictor.enable) || cfg.hotkeyFile != null;
        message = "services.taominer.hotkeyFile must be set when settings.miner.offline = false: the committer signs commitments and the predictor signs axon answers with the hotkey.";
      }
      {
        assertion = !cfg.predictor.enable || cfg.hotkeyFile != null;
        message = "services.taominer.hotkeyFile must be set for the predictor: every axon answer is signed with the hotkey.";
      }
      {
        assertion = offline || !cfg.publisher.enable || cfg.hfTokenFile != null;
        message = "services.taominer.hfTokenFile must be set when settings.miner.offline = false: the publisher uploads to the Hugging Face Hub.";
      }
      {
        assertion = !cfg.cuda || gpuDaemons == [ ] || nvidiaConfigured;
        message = "services.taominer.cuda runs the ${lib.concatStringsSep " and " gpuDaemons} on the GPU, but no NVIDIA driver is configured: set services.xserver.videoDrivers = [ \"nvidia\" ] (or hardware.nvidia.datacenter.enable = true).";
      }
    ];

    # One user per daemon, as units/taominer.sysusers says (the units name them): the D-Bus policy
    # gives each only its own rights. Group taominer: the daemons (miner.toml, the trainer's
    # checkpoints, read-only D-Bus calls); taominer-ops: the operators (minerctl's actions).
    users.users = lib.genAttrs (map (p: "taominer-${p}") parts) (user: {
      isSystemUser = true;
      group = "taominer";
      home = "/var/lib/taominer/${lib.removePrefix "taominer-" user}";
      description = "taominer ${lib.removePrefix "taominer-" user}";
    });
    users.groups.taominer = { };
    users.groups.taominer-ops.members = cfg.operators;

    services.dbus.packages = [ cfg.package ];
    systemd.packages = [ cfg.package ];
    # /etc/taominer 0750 root:taominer, as the package's tmpfiles.d snippet says.
    systemd.tmpfiles.packages = [ cfg.package ];
    environment.systemPackages = [ cfg.package ];
    environment.etc."taominer/miner.toml" = { source = configFile; group = "taominer"; mode = "0640"; };
    # The external engine's section; with the built-in engine nothing is rendered (its defaults).
    services.taominer.settings.trainer = lib.mkIf external {
      engine = "external";
      external = externalSettings;
    };
    # The engine runs as the trainer's user; the publisher reads its checkpoints through the group.
    systemd.tmpfiles.rules = lib.mkIf external [ "d ${ext.checkpointDir} 0750 taominer-trainer taominer - -" ];

    systemd.targets.miner = {
      description = "taominer: the Bittensor miner appliance (all daemons)";
      wantedBy = [ "multi-user.target" ];
      # `after` alone would not pull the network target in (NixOS warns about that).
      wants = [ "network-online.target" ] ++ map (p: "miner-${p}.service") enabled;
      after = [ "network-online.target" ];
    };
    systemd.services = lib.listToAttrs (map
      (part: lib.nameValuePair "miner-${part}" {
        wantedBy = [ "miner.target" ];
        restartTriggers = [ configFile ];
        # The unit files load /etc/taominer/{hotkey,hf-token}; here the configured files replace
        # them (an empty first entry resets the list), and offline nothing is required.
        serviceConfig = {
          LoadCredential = [ "" ] ++ credentials part;
        } // lib.optionalAttrs (part == "trainer" && external) externalService;
      })
      enabled);

    networking.firewall.allowedTCPPorts = lib.optional (cfg.openFirewall && cfg.predictor.enable) axonPort;
  };
}
