# frozen_string_literal: true

require_relative "lib/numo/shared/version"

Gem::Specification.new do |spec|
  spec.name = "numo-shared"
  spec.version = Numo::Shared::VERSION
  spec.authors = ["numo-shared developers"]
  spec.summary = "Numo::NArray arrays in MAP_SHARED memory, shared with forked processes"
  spec.description = <<~DESC
    Numo::NArray arrays backed by shared memory, so that processes forked by Ruby
    (Process.fork, the parallel gem) write results straight into the parent's arrays,
    and Numo::Parallel, a drop-in for the parallel gem whose NArray results come back
    through shared memory instead of Marshal.
  DESC
  spec.license = "BSD-3-Clause"
  spec.required_ruby_version = ">= 3.1"

  # Cargo.*.lock: the crate versions of each route (see ext/numo_shared/extconf.rb).
  spec.files = Dir["lib/**/*.rb", "ext/**/*.{rs,rb,toml}", "Cargo.toml", "Cargo.*.lock", "README.md", "LICENSE"]
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/numo_shared/extconf.rb"]

  # numo-shared works with numo-narray 0.9.2.x or with its fork numo-narray-alt
  # 0.12.x (what Rumale 2.x uses). Both install numo/narray, and RubyGems has no
  # "one of" dependency: naming either here would install it beside the other
  # in a bundle that has the other, and two gems would then provide
  # numo/narray. So the gemspec names neither; the application's Gemfile picks
  # one, and requiring numo/shared without either raises a LoadError naming
  # both (README, "Supported versions").
  spec.add_dependency "parallel", ">= 1.20", "< 3"
  spec.add_dependency "rb_sys", ">= 0.9.102", "< 0.10"
  spec.metadata["rubygems_mfa_required"] = "true"
end
