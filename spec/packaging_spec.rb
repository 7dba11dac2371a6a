# frozen_string_literal: true

require "fileutils"
require "open3"
require "rubygems"
require "tmpdir"

RSpec.describe "the gem's files" do
  root = File.expand_path("..", __dir__)
  let(:files) { Dir.chdir(root) { Gem::Specification.load("numo-shared.gemspec").files } }

  it "ship what the extension needs to build as here: sources, manifests, extconf and every route's crate lock" do
    locks = Dir.chdir(root) { Dir["Cargo.*.lock"] }
    expect(locks).to include("Cargo.debian.lock")
    expect(files).to include(*locks, "Cargo.toml", "ext/numo_shared/Cargo.toml", "ext/numo_shared/extconf.rb",
                             *Dir.chdir(root) { Dir["ext/numo_shared/src/**/*.rs", "lib/**/*.rb"] })
    expect(files).not_to include("Cargo.lock") # made from the route's lock when the gem is built
  end

  it "build says what to do when cargo cannot get the crates and none are configured" do
    Dir.mktmpdir do |dir|
      tree = File.join(dir, "numo-shared")
      FileUtils.mkdir_p([tree, File.join(dir, "build")])
      FileUtils.cp_r([File.join(root, "Cargo.toml"), File.join(root, "ext"), *Dir[File.join(root, "Cargo.*.lock")]],
                     tree)
      # No cargo config (an empty cache), no crates cached, and a proxy that refuses every connection.
      env = { "XDG_CACHE_HOME" => File.join(dir, "cache"), "NUMO_SHARED_CARGO_CONFIG" => nil,
              "CARGO_HOME" => File.join(dir, "cargo-home"), "CARGO_HTTP_PROXY" => "http://127.0.0.1:9" }
      output, status = Open3.capture2e(env, RbConfig.ruby, File.join(tree, "ext", "numo_shared", "extconf.rb"),
                                       chdir: File.join(dir, "build"))
      expect(status).not_to be_success
      expect(output).to include("numo-shared: cargo could not get the Rust crates this extension needs",
                                "run bin/setup once in a checkout of numo-shared",
                                "set NUMO_SHARED_CARGO_CONFIG to a cargo config file")
    end
  end
end
