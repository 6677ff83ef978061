# Evaluates nixos-module/ with nixpkgs' lib alone (no nixpkgs, no NixOS), for
# scripts/check-nix-module. The NixOS options the module sets are declared here as stubs, and
# pkgs.formats.toml is a stub whose "file" is the JSON of what would be rendered, so the check can
# read the settings back.
#   nix-instantiate --eval --strict --json tests/nix/eval-module.nix --arg lib LIB --argstr scenario NAME
{ lib, scenario }:
let
  lib' = import lib;
  inherit (lib') mkOption types;
  fakePackage = name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  pkgs = {
    taominer = fakePackage "taominer";
    # The engine's Python: its name lists the packages chosen, so the check can read them back.
    python3.withPackages = f: fakePackage ("python3-with-" + lib'.concatMapStringsSep "-" (p: p.name)
      (f (lib'.genAttrs [ "torch" "torchWithCuda" "transformers" "safetensors" "numpy" ] fakePackage)));
    formats.toml = { }: {
      type = types.attrsOf types.anything;
      generate = name: value: "toml:${name}:${builtins.toJSON value}";
    };
  };
  anything = mkOption { type = types.anything; default = { }; };
  list = mkOption { type = types.listOf types.anything; default = [ ]; };
  stubs = {
    options = {
      assertions = list;
      users.users = mkOption { type = types.attrsOf types.anything; default = { }; };
      users.groups = mkOption { type = types.attrsOf types.anything; default = { }; };
      services.dbus.packages = list;
      services.xserver.videoDrivers = list;
      hardware.nvidia.datacenter.enable = mkOption { type = types.bool; default = false; };
      systemd.packages = list;
      systemd.tmpfiles.packages = list;
      systemd.tmpfiles.rules = list;
      systemd.targets = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.services = mkOption { type = types.attrsOf types.anything; default = { }; };
      environment.systemPackages = list;
      environment.etc = mkOption { type = types.attrsOf types.anything; default = { }; };
      networking.firewall.allowedTCPPorts = list;
    };
  };
  scenarios = {
    # Offline, the defaults: publisher and committer, no credentials needed.
    offline = { services.taominer.enable = true; };
    # Online SN9 with every daemon, the firewall open, credentials given.
    online = {
      services.taominer = {
        enable = true;
        trainer.enable = true;
        predictor.enable = true;
        openFirewall = true;
        operators = [ "alice" ];
        hotkeyFile = "/run/keys/hotkey";
        hfTokenFile = "/run/keys/hf-token";
        settings = {
          miner = { offline = false; netuid = 9; hotkey_ss58 = "5EsNLFaGe9XK5LzWH3i6eC2Wqv6YqZS1442N1C4yeSdP6uxy"; };
          publisher.repo = "alice/sn9-model";
          predictor = { listen = "0.0.0.0:9000"; model_path = "/var/lib/models/m.onnx"; };
          trainer = { data = [ "/srv/corpus" ]; device = "cuda:0"; };
          hub.endpoint = "https://huggingface.co";
        };
      };
    };
    # Online without the hotkey or token: the assertions say what to set.
    missing-secrets = {
      services.taominer = { enable = true; settings.miner.offline = false; };
    };
    # CUDA for the trainer with no NVIDIA driver configured.
    cuda-without-driver = {
      services.taominer = { enable = true; cuda = true; trainer.enable = true; };
    };
    cuda-with-driver = {
      services.taominer = { enable = true; cuda = true; trainer.enable = true; };
      services.xserver.videoDrivers = [ "nvidia" ];
    };
    # The external engine (torchrun + the reference recipe) on 8 GPUs, two machines, RDMA.
    external-engine = {
      services.taominer = {
        enable = true;
        cuda = true;
        trainer.enable = true;
        trainer.engine = "external";
        trainer.external = {
          nprocPerNode = 8;
          torchrunArgs = [ "--nnodes" "2" "--rdzv-backend" "c10d" "--rdzv-id" "sn9" "--rdzv-endpoint" "10.0.0.1:29500" ];
          recipeArgs = [ "--max-steps" "20000" ];
          environment.NCCL_DEBUG = "WARN";
          checkpointDir = "/srv/shared/checkpoints";
          stopGraceSeconds = 60;
          rdma = true;
        };
      };
      services.xserver.videoDrivers = [ "nvidia" ];
    };
    # The external engine with its defaults, on the CPU.
    external-defaults = {
      services.taominer = { enable = true; trainer.enable = true; trainer.engine = "external"; };
    };
    # A value of the wrong type is refused by the typed option.
    bad-netuid = { services.taominer = { enable = true; settings.miner.netuid = 70000; }; };
    # A key that moved to [hub] is refused naming where it went.
    moved-key = { services.taominer = { enable = true; settings.publisher.endpoint = "https://hub.example"; }; };
  };
  eval = lib'.evalModules {
    modules = [ stubs ../../nixos-module scenarios.${scenario} ];
    specialArgs = { inherit pkgs; };
  };
  c = eval.config;
in
{
  failed = map (a: a.message) (lib'.filter (a: !a.assertion) c.assertions);
  services = c.systemd.services;
  target = c.systemd.targets.miner or null;
  packages = map (p: p.name) c.systemd.packages;
  dbus = map (p: p.name) c.services.dbus.packages;
  firewall = c.networking.firewall.allowedTCPPorts;
  config = builtins.fromJSON (lib'.removePrefix "toml:miner.toml:" c.environment.etc."taominer/miner.toml".source);
  users = c.users.users;
  groups = c.users.groups;
  tmpfiles = c.systemd.tmpfiles.rules;
}
