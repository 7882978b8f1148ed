# A Puppet manifest run on mgmt's engine: `mgmt run --tmp-prefix puppet examples/puppet.pp`.
# Puppet compiles it; every resource then watches its own events and repairs drift at once.
class motd {
  file { '/tmp/mgmt/puppet': ensure => directory }
  file { '/tmp/mgmt/puppet/motd':
    content => "managed by Puppet code, enforced by mgmt\n",
    mode    => '0644',
    notify  => Exec['motd-changed'],
  }
}
include motd

exec { 'motd-changed':
  command     => 'date >> /tmp/mgmt/puppet/motd.log',
  path        => ['/bin', '/usr/bin'],
  refreshonly => true,
}

notify { 'puppet example': message => 'the Puppet example is running' }
