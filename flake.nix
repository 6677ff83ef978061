{
  description = "taominer: a Bittensor miner appliance (Rust daemons over D-Bus under systemd)";

  inputs.nixpkgs.url = "github:nixos/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f {
        inherit system;
        pkgs = nixpkgs.legacyPackages.${system};
        # CUDA is unfree; only the cuda package and its ONNX Runtime come from this set.
        pkgsCuda = import nixpkgs { inherit system; config = { allowUnfree = true; cudaSupport = true; }; };
      });

      # The daemons and minerctl. `cuda`: candle's CUDA backend for the trainer, the ONNX Runtime
      # CUDA execution provider for the predictor (nixpkgs' mistral-rs recipe). `flashAttn` (needs
      # `cuda`): candle-flash-attn for the trainer's no-gradient passes; its CUTLASS kernels take
      # hours to compile on a few cores, so only `packages.cuda` turns it on.
      taominer = { pkgs, cuda ? false, flashAttn ? false }:
        let
          inherit (pkgs) lib;
          cudaPackages = pkgs.cudaPackages;
        in
        pkgs.rustPlatform.buildRustPackage {
          pname = if cuda then "taominer-cuda" else "taominer";
          version = "0.1.0";
          src = lib.cleanSource self;
          cargoLock.lockFile = ./Cargo.lock;
          buildFeatures = lib.optionals cuda [ "taominer-trainer/cuda" "taominer-predictor/cuda" ]
            ++ lib.optional flashAttn "taominer-trainer/flash-attn";
          nativeBuildInputs = [ pkgs.makeWrapper ]
            ++ lib.optionals cuda [ pkgs.autoPatchelfHook cudaPackages.cuda_nvcc pkgs.autoAddDriverRunpath ];
          # CCCL's attribute was cuda_cccl before nixpkgs renamed it to cccl (CUDA 13.3): take either.
          buildInputs = lib.optionals cuda ([ (cudaPackages.cccl or cudaPackages.cuda_cccl) ]
            ++ (with cudaPackages; [ cuda_cudart cuda_nvrtc libcublas libcurand ])
            ++ lib.optional flashAttn cudaPackages.cutlass);
          env = lib.optionalAttrs cuda {
            # No GPU in the build sandbox: name the architecture (sm_80, what flash-attn needs).
            CUDA_COMPUTE_CAP = "80";
            CUDA_TOOLKIT_ROOT_DIR = lib.getDev cudaPackages.cuda_cudart;
          };
          # candle-flash-attn's build (cudaforge's with_cutlass) would git-clone CUTLASS and reads no
          # variable naming another copy: point the vendored build script at nixpkgs' CUTLASS headers.
          postPatch = lib.optionalString flashAttn ''
            substituteInPlace "$cargoDepsCopy"/candle-flash-attn-*/build.rs \
              --replace-fail '.with_cutlass(Some(CUTLASS_COMMIT))' '.arg("-I${cudaPackages.cutlass}/include")'
          '';
          # The cross-process tests need dbus-daemon, systemd-nspawn and a Python venv from PyPI:
          # they run in CI (scripts/test), and `checks.unit-tests` runs the rest in the sandbox.
          doCheck = false;
          postInstall = ''
            install -Dm644 units/miner-*.service -t $out/lib/systemd/system
            install -Dm644 units/org.taominer.conf -t $out/share/dbus-1/system.d
            install -Dm644 units/taominer.sysusers $out/lib/sysusers.d/taominer.conf
            install -Dm644 units/taominer.tmpfiles $out/lib/tmpfiles.d/taominer.conf
            # The reference engine for trainer.engine = "external" (the module's default command).
            install -Dm755 recipes/fsdp/train.py -t $out/share/taominer/recipes/fsdp
            install -Dm644 recipes/fsdp/README.md -t $out/share/taominer/recipes/fsdp
            substituteInPlace $out/lib/systemd/system/*.service --replace-fail /usr/local/bin $out/bin
            wrapProgram $out/bin/miner-predictor \
              --set-default ORT_DYLIB_PATH ${pkgs.onnxruntime}/lib/libonnxruntime.so
          '';
          meta = {
            description = "Bittensor miner appliance";
            mainProgram = "minerctl";
            platforms = lib.platforms.linux;
          };
        };
    in
    {
      packages = forAllSystems ({ pkgs, pkgsCuda, ... }: rec {
        default = taominer { inherit pkgs; };
        cuda = taominer { pkgs = pkgsCuda; cuda = true; flashAttn = true; };
      });

      # The module, with the package defaulting to this flake's (the CUDA one when `cuda` is on).
      nixosModules.default = { config, lib, pkgs, ... }: {
        imports = [ ./nixos-module ];
        services.taominer.package = lib.mkDefault
          self.packages.${pkgs.stdenv.hostPlatform.system}.${if config.services.taominer.cuda then "cuda" else "default"};
      };

      checks = forAllSystems ({ system, pkgs, ... }:
        let package = self.packages.${system}.default;
        in {
          build = package;
          clippy = package.overrideAttrs (o: {
            pname = "taominer-clippy";
            nativeBuildInputs = o.nativeBuildInputs ++ [ pkgs.clippy ];
            buildPhase = "cargo clippy --workspace --all-targets --offline -- -D warnings";
            installPhase = "touch $out";
            postInstall = "";
          });
          unit-tests = package.overrideAttrs (o: {
            pname = "taominer-unit-tests";
            doCheck = true;
            cargoTestFlags = [ "--workspace" "--exclude" "taominer-tests" ];
          });
          module = pkgs.testers.runNixOSTest {
            name = "taominer-module";
            nodes.machine = {
              imports = [ self.nixosModules.default ];
              services.taominer = { enable = true; trainer.enable = true; predictor.enable = false; };
            };
            testScript = ''
              machine.wait_for_unit("miner.target")
              for unit in ["miner-publisher", "miner-committer", "miner-trainer"]:
                  machine.wait_for_unit(unit + ".service")
              machine.succeed("minerctl --bus system status")
              machine.succeed("journalctl -u miner-publisher -o json | grep -q SYSLOG_IDENTIFIER")
            '';
          };
        });

      devShells = forAllSystems ({ pkgs, ... }: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt dbus python3 git systemd onnxruntime nix ];
          ORT_DYLIB_PATH = "${pkgs.onnxruntime}/lib/libonnxruntime.so";
        };
      });

      # nixfmt-rfc-style is a deprecated alias of nixfmt (evaluation warning); nixfmt-tree wraps nixfmt in
      # treefmt so that a bare `nix fmt` formats the whole tree.
      formatter = forAllSystems ({ pkgs, ... }: pkgs.nixfmt-tree);
    };
}
