# frozen_string_literal: true

require "rubygems"

RSpec.describe "the gem's files" do
  root = File.expand_path("..", __dir__)
  let(:files) { Dir.chdir(root) { Gem::Specification.load("numo-shared.gemspec").files } }

  it "ship what the extension needs to build as here: sources, manifests, extconf and every route's crate lock" do
    locks = Dir.chdir(root) { Dir["Cargo.*.lock"] }
    expect(locks).to include("Cargo.debian.lock")
    expect(files).to include(*locks, "Cargo.toml", "ext/numo_shared/Cargo.toml", "ext/numo_shared/extconf.rb",
                             *Dir.chdir(root) { Dir["ext/numo_shared/src/*.rs", "lib/**/*.rb"] })
    expect(files).not_to include("Cargo.lock") # made from the route's lock when the gem is built
  end
end
