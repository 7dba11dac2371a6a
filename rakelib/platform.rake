# frozen_string_literal: true

require "fileutils"
require "rubygems/package"

# The precompiled gem: pkg/numo-shared-VERSION-x86_64-linux.gem, which
# installs without Rust. It holds the extension built for each supported
# Ruby minor, lib/numo/shared/MAJOR.MINOR/numo_shared.so (chosen at load by
# lib/numo/shared/extension.rb): this Ruby's, built here, and those of the
# Debian roots of bin/debian-root, built in a copy of the repository in each
# (the root's leg below runs bin/setup, which compiles). PLATFORM_ROOTS
# (default "trixie sid") names the roots; an empty value builds this Ruby's only.
module PlatformGem
  ROOT = File.expand_path("..", __dir__)
  STAGE = File.join(ROOT, "tmp", "platform")
  # The root and the leg whose bundle builds the extension there.
  LEGS = { "trixie" => "alt", "sid" => "ruby34" }.freeze

  module_function

  def minor(version) = version[/\A\d+\.\d+/]

  def sh!(*command)
    system(*command, chdir: ROOT) || abort("gem:platform: #{command.join(' ')} failed")
  end

  def capture!(*command)
    output = IO.popen(command, chdir: ROOT, &:read)
    abort("gem:platform: #{command.join(' ')} failed") unless $?.success? # rubocop:disable Style/SpecialGlobalVars
    output
  end

  # Copies an extension into the stage as the one for Ruby +version+, without its debug info.
  def stage(library, version)
    dest = File.join(STAGE, "lib", "numo", "shared", minor(version), "numo_shared.so")
    FileUtils.mkdir_p(File.dirname(dest))
    FileUtils.cp(library, dest)
    sh!("strip", "--strip-debug", dest)
    puts "gem:platform: Ruby #{version}: #{dest.delete_prefix("#{ROOT}/")}, needs #{glibc(dest)}"
  end

  # The newest glibc symbol version the library needs.
  def glibc(library)
    versions = capture!("objdump", "-T", library).scan(/GLIBC_([0-9.]+)/).flatten
    "glibc #{versions.max_by { |version| Gem::Version.new(version) }}"
  end

  # Builds the extension in a root and stages it.
  def from_root(root)
    leg = LEGS.fetch(root) { abort "gem:platform: no root '#{root}' (#{LEGS.keys.join(', ')})" }
    version = capture!("bin/debian-root", root, "exec", leg,
                       "bin/setup >/tmp/platform-setup.log 2>&1 || { cat /tmp/platform-setup.log >&2; exit 1; }; " \
                       "ruby -e 'print RUBY_VERSION'").lines.last.strip
    stage(File.join(capture!("bin/debian-root", root, "path").strip, "legs", leg, "lib", "numo", "numo_shared.so"),
          version)
  end

  # The gem's specification: the source gem's, for this platform, with the
  # compiled extensions instead of the sources, and no build dependency.
  def spec(minors)
    spec = Gem::Specification.load(File.join(ROOT, "numo-shared.gemspec"))
    spec.platform = Gem::Platform.new("x86_64-linux")
    spec.extensions = []
    spec.files = Dir.chdir(STAGE) { Dir["lib/**/*.rb", "lib/**/*.so", "README.md", "LICENSE"] }.sort
    spec.dependencies.reject! { |dependency| dependency.name == "rb_sys" }
    spec.required_ruby_version = ruby_versions(minors)
    spec
  end

  # From the oldest minor to before the one after the newest (3.1 to 3.4: >= 3.1, < 3.5.a).
  def ruby_versions(minors)
    versions = minors.map { |minor| Gem::Version.new(minor) }.sort
    [">= #{versions.first}", "< #{versions.last.bump}.a"]
  end

  # The Ruby files, README and LICENSE, into a fresh stage.
  def stage_sources
    FileUtils.rm_rf(STAGE)
    (Dir.chdir(ROOT) { Dir["lib/**/*.rb"] } + %w[README.md LICENSE]).each do |file|
      FileUtils.mkdir_p(File.join(STAGE, File.dirname(file)))
      FileUtils.cp(File.join(ROOT, file), File.join(STAGE, file))
    end
  end

  def build
    stage_sources
    stage(File.join(ROOT, "lib", "numo", "numo_shared.so"), RUBY_VERSION)
    ENV.fetch("PLATFORM_ROOTS", "trixie sid").split.each { |root| from_root(root) }
    package(Dir[File.join(STAGE, "lib/numo/shared/*/numo_shared.so")].map { |so| File.basename(File.dirname(so)) })
  end

  def package(minors)
    gem = Dir.chdir(STAGE) { Gem::Package.build(spec(minors)) }
    FileUtils.mkdir_p(File.join(ROOT, "pkg"))
    FileUtils.mv(File.join(STAGE, gem), File.join(ROOT, "pkg", gem))
    puts "gem:platform: pkg/#{gem} (Ruby #{minors.sort.join(', ')})"
  end
end

namespace :gem do
  desc "Build pkg/numo-shared-VERSION-x86_64-linux.gem: the extension precompiled for each supported Ruby"
  task platform: :compile do
    PlatformGem.build
  end
end
