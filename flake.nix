{
  description = "taominer: a Bittensor miner appliance (Rust daemons over D-Bus under systemd)";

  # Minimal until the packaging issue: the CPU package, the NixOS module and a dev shell.
  inputs.nixpkgs.url = "github:nixos/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "taominer";
          version = "0.1.0";
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          # The cross-process tests start dbus-daemon, python3, git and systemd-analyze.
          nativeCheckInputs = with pkgs; [ dbus python3 git systemd ];
          postInstall = ''
            install -Dm644 units/*.service units/miner.target -t $out/lib/systemd/system
            install -Dm644 units/org.taominer.conf -t $out/share/dbus-1/system.d
            install -Dm644 units/taominer.sysusers $out/lib/sysusers.d/taominer.conf
            install -Dm644 units/taominer.tmpfiles $out/lib/tmpfiles.d/taominer.conf
            substituteInPlace $out/lib/systemd/system/*.service --replace-fail /usr/local/bin $out/bin
          '';
          meta = {
            description = "Bittensor miner appliance";
            mainProgram = "minerctl";
            platforms = pkgs.lib.platforms.linux;
          };
        };
      });

      nixosModules.default = import ./nixos-module;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt dbus python3 git ];
        };
      });
    };
}
