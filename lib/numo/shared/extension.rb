# frozen_string_literal: true

# Loads the compiled extension. The precompiled (platform) gem holds one for
# each Ruby minor it supports, in lib/numo/shared/<major.minor>/; a source
# build (gem install of the source gem, or rake compile in a checkout) puts
# it in lib/numo/. The first that exists for this Ruby is loaded.
prebuilt = File.join(__dir__, RUBY_VERSION[/\A\d+\.\d+/], "numo_shared.so")
if File.file?(prebuilt)
  require prebuilt
elsif File.file?(File.expand_path("../numo_shared.#{RbConfig::CONFIG['DLEXT']}", __dir__))
  require_relative "../numo_shared"
else
  minors = Dir[File.join(__dir__, "*", "numo_shared.so")].map { |so| File.basename(File.dirname(so)) }.sort
  raise LoadError, "numo-shared has no compiled extension for Ruby #{RUBY_VERSION}" +
                   if minors.empty?
                     ": build it (bin/setup, or bundle exec rake compile) or install the gem with a Rust toolchain"
                   else
                     ". This precompiled gem holds it for Ruby #{minors.join(', ')}; on another Ruby, install the " \
                       "source gem instead (gem install numo-shared --platform ruby), which needs a Rust toolchain"
                   end
end
