# frozen_string_literal: true

require "mkmf"
require "rb_sys/mkmf"

# Where crates.io cannot be reached, bin/setup unpacks Debian's packaged Rust
# crates into a cache folder and writes a cargo config that points cargo at them.
# That config is passed to cargo only when it exists, so the ordinary crates.io
# path never sees it.
offline_config = ENV.fetch("NUMO_SHARED_CARGO_CONFIG") do
  File.join(ENV.fetch("XDG_CACHE_HOME", File.join(Dir.home, ".cache")), "numo-shared", "cargo-config.toml")
end

create_rust_makefile("numo/numo_shared") do |r|
  r.profile = ENV.fetch("RB_SYS_CARGO_PROFILE", :release).to_sym
  if File.file?(offline_config)
    message "using offline Rust crates from #{offline_config}\n"
    r.extra_cargo_args += ["--config", offline_config]
  end
end
