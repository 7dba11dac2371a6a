# frozen_string_literal: true

require "fileutils"
require "open3"
require "tmpdir"

# lib/numo/shared/extension.rb: the precompiled gem's .so for this Ruby's
# minor, else the source build's, else a LoadError that says which Rubies the
# gem has. Checked on copies of the loader in a scratch tree.
RSpec.describe "The extension loader" do
  loader = File.expand_path("../lib/numo/shared/extension.rb", __dir__)
  minor = RUBY_VERSION[/\A\d+\.\d+/]

  def load_in(tree, loader)
    FileUtils.mkdir_p(File.join(tree, "numo", "shared"))
    FileUtils.cp(loader, File.join(tree, "numo", "shared", "extension.rb"))
    Open3.capture2e({ "RUBYOPT" => nil }, RbConfig.ruby, "-e",
                    "begin; require #{File.join(tree, 'numo/shared/extension').dump}; " \
                    "rescue LoadError => e; puts e.message; end; puts $LOADED_FEATURES.grep(/numo_shared/)")
  end

  it "loads the .so of this Ruby's minor, from the precompiled gem's folder" do
    Dir.mktmpdir do |tree|
      FileUtils.mkdir_p(File.join(tree, "numo", "shared", minor))
      File.write(File.join(tree, "numo", "shared", minor, "numo_shared.so"), "not an ELF file")
      output, = load_in(tree, loader)
      expect(output).to include("numo/shared/#{minor}/numo_shared.so") # it tried that one
    end
  end

  it "raises a LoadError naming this Ruby and the ones the gem holds, when it has none for this Ruby" do
    Dir.mktmpdir do |tree|
      %w[2.9 9.8].each do |other|
        FileUtils.mkdir_p(File.join(tree, "numo", "shared", other))
        File.write(File.join(tree, "numo", "shared", other, "numo_shared.so"), "")
      end
      output, = load_in(tree, loader)
      expect(output).to include("numo-shared has no compiled extension for Ruby #{RUBY_VERSION}",
                                "holds it for Ruby 2.9, 9.8", "gem install numo-shared --platform ruby")
    end
  end

  it "says how to build it in a checkout with none built" do
    Dir.mktmpdir do |tree|
      output, = load_in(tree, loader)
      expect(output).to include("no compiled extension for Ruby #{RUBY_VERSION}", "bin/setup")
    end
  end
end
