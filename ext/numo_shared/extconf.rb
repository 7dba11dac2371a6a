# frozen_string_literal: true

require "fileutils"
require "mkmf"
require "open3"
require "rb_sys/mkmf"

# Where the Rust crates come from, and which versions.
#
# Crates come from crates.io, unless a cargo config points cargo elsewhere:
# NUMO_SHARED_CARGO_CONFIG, else the one that bin/setup writes in
# ~/.cache/numo-shared when crates.io cannot be reached (it unpacks Debian's
# packaged crates there). The config is passed to this build's cargo only.
#
# Each route has its lock, shipped with the gem: Cargo.debian.lock for Debian
# 13's packaged crates, Cargo.debian-sid.lock for sid's (Debian's crates carry
# Debian's checksums, which crates.io's lock could not verify); bin/setup's
# config names the one whose versions it found ("# numo-shared lock: ...").
# Cargo.crates-io.lock for crates.io, if shipped. The route's lock becomes
# Cargo.lock and cargo runs with --locked.
#
# The crates are fetched before the build, without cargo's retries, so that
# a machine that cannot get them learns at once what to do.
module NumoSharedBuild
  ROOT = File.expand_path("../..", __dir__)
  MANIFEST = File.join(ROOT, "ext", "numo_shared", "Cargo.toml")
  LOCK = File.join(ROOT, "Cargo.lock")
  SETUP_CONFIG_MARK = "Written by numo-shared's bin/setup"
  CACHE = File.join(ENV.fetch("XDG_CACHE_HOME", File.join(Dir.home, ".cache")), "numo-shared")

  module_function

  def cargo = ENV.fetch("CARGO", "cargo")

  # The cargo config file this build passes on, or nil for crates.io.
  def config_path
    path = ENV.fetch("NUMO_SHARED_CARGO_CONFIG", "")
    path = File.join(CACHE, "cargo-config.toml") if path.empty?
    path if File.file?(path)
  end

  # The lock's file name: the one bin/setup's config names (Cargo.debian.lock
  # if it names none), Cargo.crates-io.lock without a config, nil for a
  # config of the user's own (its crates are whatever it names).
  def route_lock(config)
    return "Cargo.crates-io.lock" if config.nil?

    text = File.read(config)
    text[/^# numo-shared lock: (\S+)$/, 1] || "Cargo.debian.lock" if text.include?(SETUP_CONFIG_MARK)
  end

  # Puts the lock +name+ in place as Cargo.lock; true when there is one.
  def locked_with?(name)
    lock = name && File.join(ROOT, File.basename(name))
    if lock && File.file?(lock)
      FileUtils.cp(lock, LOCK) unless File.file?(LOCK) && FileUtils.identical?(lock, LOCK)
      return true
    end
    remove_other_routes_lock
    false
  end

  # A Cargo.lock copied from another route's lock would fail this route's
  # checksums; one of the user's own is left alone.
  def remove_other_routes_lock
    return unless File.file?(LOCK)

    shipped = Dir[File.join(ROOT, "Cargo.*.lock")]
    File.delete(LOCK) if shipped.any? { |lock| FileUtils.identical?(lock, LOCK) }
  end

  def cargo_args(config, locked)
    (config ? ["--config", config] : []) + (locked ? ["--locked"] : [])
  end

  # Fetches the crates for this machine's target now; aborts with advice
  # when cargo cannot get them.
  def fetch(config, locked)
    env = { "CARGO_NET_RETRY" => "0", "CARGO_HTTP_TIMEOUT" => "20" }
    argv = [cargo, "fetch", "--manifest-path", MANIFEST, "--target", host_triple, *cargo_args(config, locked)]
    output, status = Open3.capture2e(env, *argv)
    abort(advice(config, output)) unless status.success?
  rescue Errno::ENOENT
    abort "numo-shared: #{cargo} is not on PATH. Install a Rust toolchain (rustup, or your system's " \
          "cargo and rustc) at least as new as the rust-version in ext/numo_shared/Cargo.toml."
  end

  def host_triple
    Open3.capture2(cargo.sub(/cargo\z/, "rustc"), "-vV").first[/^host: (\S+)/, 1] || RbConfig::CONFIG["host"]
  rescue Errno::ENOENT
    RbConfig::CONFIG["host"]
  end

  def advice(config, output)
    head = "numo-shared: cargo could not get the Rust crates this extension needs:\n\n" \
           "#{output.lines.last(12).join.gsub(/^/, '  ')}\n"
    return head + offline_advice(config) if config

    head + <<~ADVICE
      If crates.io cannot be reached from this machine, give cargo the crates another way:
        - run bin/setup once in a checkout of numo-shared: it downloads Debian's packaged crates into
          #{CACHE} and writes #{File.join(CACHE, 'cargo-config.toml')}, which later builds
          (gem install included) use by themselves; or
        - set NUMO_SHARED_CARGO_CONFIG to a cargo config file that points cargo at the crates
          (a [source] replacement, e.g. a vendored directory), then build again.
    ADVICE
  end

  def offline_advice(config)
    "The crates named by #{config} do not provide what the build needs. If bin/setup wrote it, run\n" \
      "bin/setup again: it checks the packaged crates against each Cargo.debian*.lock and, when none\n" \
      "matches, prints the command that writes a lock for them; if it is your own, check what it points at.\n"
  end
end

config = NumoSharedBuild.config_path
locked = NumoSharedBuild.locked_with?(NumoSharedBuild.route_lock(config))
message "using the Rust crates named by #{config}\n" if config
message "crate versions locked by #{NumoSharedBuild::LOCK}\n" if locked
NumoSharedBuild.fetch(config, locked)

create_rust_makefile("numo/numo_shared") do |r|
  r.profile = ENV.fetch("RB_SYS_CARGO_PROFILE", :release).to_sym
  r.extra_cargo_args += NumoSharedBuild.cargo_args(config, locked)
end
