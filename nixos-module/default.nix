# services.taominer: the NixOS module. Minimal until the packaging issue (hardening, GPU
# devices): it renders miner.toml from `settings` (RFC 42) and runs the daemons as in units/,
# with the hotkey and the HF token as systemd credentials.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.taominer;
  settingsFormat = pkgs.formats.toml { };
  configFile = settingsFormat.generate "miner.toml" cfg.settings;
  daemon = part: {
    description = "taominer ${part}";
    partOf = [ "miner.target" ];
    wantedBy = [ "miner.target" ];
    after = [ "dbus.service" "network-online.target" ];
    wants = [ "network-online.target" ];
    requires = [ "dbus.service" ];
    serviceConfig = {
      Type = "notify";
      NotifyAccess = "main";
      ExecStart = "${cfg.package}/bin/miner-${part} --config ${configFile} --bus system";
      User = "taominer";
      Group = "taominer";
      StateDirectory = "taominer/${part}";
      StateDirectoryMode = "0700";
      WatchdogSec = "60s";
      Restart = "on-failure";
      RestartSec = "5s";
      RestartPreventExitStatus = 78;
      NoNewPrivileges = true;
      ProtectSystem = "strict";
      ProtectHome = "read-only";
      PrivateTmp = true;
      UMask = "0077";
    } // lib.optionalAttrs (part == "committer" && cfg.hotkeyFile != null) {
      LoadCredential = [ "hotkey:${cfg.hotkeyFile}" ];
    } // lib.optionalAttrs (part == "publisher" && cfg.hfTokenFile != null) {
      # The publisher reads $CREDENTIALS_DIRECTORY/hf-token; the token never enters the store.
      LoadCredential = [ "hf-token:${cfg.hfTokenFile}" ];
    };
  };
in
{
  options.services.taominer = {
    enable = lib.mkEnableOption "the taominer Bittensor miner";
    package = lib.mkOption {
      type = lib.types.package;
      description = "The taominer package.";
    };
    settings = lib.mkOption {
      type = settingsFormat.type;
      default = { };
      example = { miner = { profile = "pretraining"; offline = true; }; };
      description = "Contents of miner.toml; see the README's configuration reference.";
    };
    hotkeyFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "Hotkey keyfile, given to the committer only as a systemd credential.";
    };
    hfTokenFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/secrets/hf-token";
      description = "File with the Hugging Face token (a path string, so the secret stays out of the Nix store), given to the publisher only as a systemd credential.";
    };
    trainer.enable = lib.mkEnableOption "the trainer daemon";
    predictor.enable = lib.mkEnableOption "the predictor daemon";
  };

  config = lib.mkIf cfg.enable {
    users.users.taominer = { isSystemUser = true; group = "taominer"; };
    users.groups.taominer = { };
    services.dbus.packages = [ cfg.package ];
    environment.systemPackages = [ cfg.package ];
    environment.etc."taominer/miner.toml".source = configFile;
    systemd.targets.miner = {
      description = "taominer: the Bittensor miner appliance";
      wantedBy = [ "multi-user.target" ];
    };
    systemd.services = {
      miner-publisher = daemon "publisher";
      miner-committer = daemon "committer";
    } // lib.optionalAttrs cfg.trainer.enable { miner-trainer = daemon "trainer"; }
      // lib.optionalAttrs cfg.predictor.enable { miner-predictor = daemon "predictor"; };
  };
}
